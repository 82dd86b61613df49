#!/usr/bin/env python3
"""A real SMTP server for the tests: accepts every message and keeps it.

    python3 tests/smtp_sink.py --dir DIR [--host 127.0.0.1] [--port 0]

Listens with aiosmtpd (plain SMTP, no TLS, no AUTH), prints
`listening on HOST:PORT` on standard output once it accepts connections,
and writes the n-th message it receives as DIR/<n>.eml (n from 1): the line
`X-Envelope-To: <rcpt>, <rcpt>` and the line `X-Envelope-From: <sender>`,
then the message as received. Each file is written under a temporary name
and renamed, so a reader never sees half a message. Stops on SIGTERM or
SIGINT, and when its standard input closes (so it does not outlive the test
that started it with a pipe there).
"""

import argparse
import asyncio
import os
import signal
import sys
import threading

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        head = (
            "X-Envelope-To: " + ", ".join(envelope.rcpt_tos) + "\r\n"
            "X-Envelope-From: " + (envelope.mail_from or "") + "\r\n"
        ).encode("utf-8")
        content = envelope.original_content or b""
        final = os.path.join(self.directory, f"{self.count}.eml")
        partial = os.path.join(self.directory, f".{self.count}.eml.partial")
        with open(partial, "wb") as out:
            out.write(head)
            out.write(content)
        os.replace(partial, final)
        return "250 Message accepted for delivery"


def watch_stdin(loop, stop):
    """Sets `stop` once standard input reaches its end."""
    # The file descriptor, not sys.stdin: its buffer's lock would be held
    # by this thread when the interpreter shuts down.
    try:
        while os.read(sys.stdin.fileno(), 65536):
            pass
    except (OSError, ValueError):
        pass
    loop.call_soon_threadsafe(stop.set)


async def serve(args):
    os.makedirs(args.dir, exist_ok=True)
    sink = Sink(args.dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        # A fixed host name spares the look-up of the machine's FQDN.
        lambda: SMTP(sink, hostname="smtp-sink", decode_data=False),
        host=args.host,
        port=args.port,
    )
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    threading.Thread(target=watch_stdin, args=(loop, stop), daemon=True).start()
    await stop.wait()
    server.close()
    await server.wait_closed()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="where to write <n>.eml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: one the system picks")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
