//! A real SMTP server for the tests, run by the tests themselves: the SMTP
//! state machine of the `mailin` crate (EHLO/HELO, MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT, …) on tokio sockets, keeping each message
//! it receives in memory, and the messages read back from there. It can be
//! made to refuse its first messages (a 4xx or 5xx reply to DATA)
//! and to take its time over each.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mailin::{Action, Handler, Response, SessionBuilder};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long `SmtpSink::wait_for` waits for the messages to arrive.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running SMTP server on 127.0.0.1, plain SMTP without TLS or AUTH,
/// accepting every message. It runs on a thread and runtime of its own, so
/// that it answers whatever the test's runtime is doing; stopped (its
/// connections closed) on drop.
pub struct SmtpSink {
    /// Each message as received, parsed when asked for (so that a message
    /// the parser cannot take fails the test that reads it).
    received: Arc<Mutex<Vec<String>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How the sink answers each message.
#[derive(Default)]
struct Behaviour {
    /// The replies (codes) to give the next messages instead of accepting.
    refusals: VecDeque<u16>,
    /// Messages refused so far.
    refused: usize,
    /// How long the sink takes over each message (blocking the sink: one
    /// message at a time, like a slow server).
    delay: Duration,
}

impl SmtpSink {
    /// Starts the sink on a port the system picks and returns once it
    /// listens.
    pub async fn start() -> SmtpSink {
        Self::start_with(&[], Duration::ZERO).await
    }

    /// A sink that refuses its first messages with `refusals` (SMTP reply
    /// codes, 4xx or 5xx, one per message), then accepts, taking `delay`
    /// over each message.
    pub async fn start_with(refusals: &[u16], delay: Duration) -> SmtpSink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .expect("bind the SMTP sink to 127.0.0.1");
        let port = listener
            .local_addr()
            .expect("the SMTP sink's address")
            .port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour {
            refusals: refusals.iter().copied().collect(),
            refused: 0,
            delay,
        }));
        let (stop, stopped) = oneshot::channel();
        let store = Sink {
            received: Arc::clone(&received),
            behaviour: Arc::clone(&behaviour),
        };
        let thread = std::thread::Builder::new()
            .name("smtp-sink".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .expect("the SMTP sink's runtime");
                runtime.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("the SMTP sink's listener");
                    tokio::select! {
                        () = accept(listener, store) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime ends every connection's task.
            })
            .expect("start the SMTP sink's thread");
        SmtpSink {
            received,
            behaviour,
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `smtp://127.0.0.1:PORT`: plain SMTP, as the mailer's `smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// How many messages the sink has refused.
    pub fn refused(&self) -> usize {
        self.behaviour
            .lock()
            .expect("the SMTP sink's behaviour")
            .refused
    }

    /// Accepts every message from now on.
    pub fn accept_all(&self) {
        self.behaviour
            .lock()
            .expect("the SMTP sink's behaviour")
            .refusals
            .clear();
    }

    /// Every message received so far, in the order received.
    pub fn messages(&self) -> Vec<Received> {
        let raw = self
            .received
            .lock()
            .expect("the SMTP sink's messages")
            .clone();
        raw.iter().map(|raw| Received::parse(raw)).collect()
    }

    /// Waits until at least `n` messages have arrived and returns them all;
    /// panics after 30 s or if the sink has stopped.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                panic!(
                    "the SMTP sink stopped with {} of {n} messages",
                    messages.len()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived at the SMTP sink within {PATIENCE:?}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the sessions share: the messages kept, and how to answer.
#[derive(Clone)]
struct Sink {
    received: Arc<Mutex<Vec<String>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

/// Accepts connections until the runtime stops, each served by a task.
async fn accept(listener: TcpListener, store: Sink) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve(stream, peer, store.clone()));
            }
            // A connection that failed before it was accepted; others may not.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// One SMTP session: each line the client sends goes to mailin's state
/// machine, and its answer back; ends when either side closes.
async fn serve(stream: TcpStream, peer: SocketAddr, store: Sink) {
    let _ = session(stream, peer.ip(), store).await;
}

async fn session(stream: TcpStream, peer: IpAddr, store: Sink) -> std::io::Result<()> {
    // A fixed host name spares the look-up of the machine's FQDN.
    let mut session = SessionBuilder::new("smtp-sink").build(peer, Recorder::new(store));
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(&session.greeting().buffer()?).await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let response = session.process(&line);
        match response.action {
            Action::Reply => write.write_all(&response.buffer()?).await?,
            Action::NoReply => {}
            // STARTTLS is not offered, so an upgrade is never asked for.
            Action::Close | Action::UpgradeTls => {
                write.write_all(&response.buffer()?).await?;
                return Ok(());
            }
        }
    }
}

/// Keeps each message of a session, with its envelope, as
/// `tests/smtp_sink.py` writes it to a file: the lines
/// `X-Envelope-To: <rcpt>, <rcpt>` and `X-Envelope-From: <sender>`, then the
/// message as received (dot-unstuffed, without the final `.` line).
struct Recorder {
    store: Sink,
    envelope_from: String,
    envelope_to: Vec<String>,
    content: Vec<u8>,
}

impl Recorder {
    fn new(store: Sink) -> Recorder {
        Recorder {
            store,
            envelope_from: String::new(),
            envelope_to: Vec::new(),
            content: Vec::new(),
        }
    }
}

impl Handler for Recorder {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        // Refused in answer to DATA: after an error at the end of the data,
        // mailin's state machine would stay in the data state.
        let refusal = match self.store.behaviour.lock() {
            Ok(mut behaviour) => {
                let refusal = behaviour.refusals.pop_front();
                behaviour.refused += usize::from(refusal.is_some());
                refusal
            }
            Err(_) => return mailin::response::TRANSACTION_FAILED,
        };
        if let Some(code) = refusal {
            return Response::custom(code, "refused by the test".into());
        }
        self.envelope_from = from.to_owned();
        self.envelope_to = to.to_vec();
        self.content.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.content.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let raw = format!(
            "X-Envelope-To: {}\r\nX-Envelope-From: {}\r\n{}",
            self.envelope_to.join(", "),
            self.envelope_from,
            String::from_utf8_lossy(&self.content)
        );
        self.content.clear();
        match self.store.behaviour.lock() {
            Ok(behaviour) => std::thread::sleep(behaviour.delay),
            Err(_) => return mailin::response::TRANSACTION_FAILED,
        }
        match self.store.received.lock() {
            Ok(mut store) => {
                store.push(raw);
                mailin::response::OK
            }
            Err(_) => mailin::response::TRANSACTION_FAILED,
        }
    }
}

/// One message as the sink received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The envelope's recipients (`RCPT TO`).
    pub envelope_to: Vec<String>,
    /// The envelope's sender (`MAIL FROM`).
    pub envelope_from: String,
    /// The `Subject` header, unfolded and decoded.
    pub subject: String,
    /// The whole file: the sink's `X-Envelope-*` lines, then the message.
    pub raw: String,
    headers: Vec<(String, String)>,
    parts: Vec<MimePart>,
}

#[derive(Clone, Debug)]
struct MimePart {
    content_type: String,
    body: String,
}

impl Received {
    fn parse(raw: &str) -> Received {
        let (headers, body) = split_entity(raw);
        let find = |name: &str| {
            headers
                .iter()
                .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        let envelope_to = find("X-Envelope-To")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|to| !to.is_empty())
            .map(str::to_owned)
            .collect();
        let envelope_from = find("X-Envelope-From").unwrap_or_default();
        let subject = find("Subject").unwrap_or_default();
        let mut parts = Vec::new();
        collect_parts(&headers, &body, &mut parts);
        Received {
            envelope_to,
            envelope_from,
            subject,
            raw: raw.to_owned(),
            headers,
            parts,
        }
    }

    /// The first header of that name (any case), unfolded and decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The `From` header.
    pub fn from(&self) -> &str {
        self.header("From").unwrap_or_default()
    }

    /// The `To` header.
    pub fn to(&self) -> &str {
        self.header("To").unwrap_or_default()
    }

    /// The `Content-Type` of every leaf part, in order (`text/plain`, …,
    /// without parameters).
    pub fn content_types(&self) -> Vec<&str> {
        self.parts
            .iter()
            .map(|part| part.content_type.as_str())
            .collect()
    }

    /// The decoded body of the first part of `content_type` (`text/plain`).
    pub fn body_of(&self, content_type: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|part| part.content_type.eq_ignore_ascii_case(content_type))
            .map(|part| part.body.as_str())
    }

    /// The decoded plain-text body; panics when there is none.
    pub fn text_body(&self) -> &str {
        self.body_of("text/plain")
            .unwrap_or_else(|| panic!("no text/plain part in\n{}", self.raw))
    }

    /// The decoded HTML body; panics when there is none.
    pub fn html_body(&self) -> &str {
        self.body_of("text/html")
            .unwrap_or_else(|| panic!("no text/html part in\n{}", self.raw))
    }

    /// The first link with a `token=` parameter (in its fragment, or in its
    /// query) in the plain-text body; panics when there is none.
    pub fn link(&self) -> &str {
        self.text_body()
            .split_whitespace()
            .find(|word| {
                (word.starts_with("http://") || word.starts_with("https://"))
                    && ["#token=", "?token=", "&token="]
                        .iter()
                        .any(|parameter| word.contains(parameter))
            })
            .unwrap_or_else(|| panic!("no link with a token in\n{}", self.text_body()))
    }

    /// The `token` parameter of `link()`, as it stands there.
    pub fn token(&self) -> &str {
        let link = self.link();
        let at = ["#token=", "?token=", "&token="]
            .iter()
            .find_map(|parameter| link.find(parameter))
            .expect("token parameter");
        let token = &link[at + "#token=".len()..];
        token.split(['&', '#']).next().unwrap_or_default()
    }
}

/// Headers (unfolded, encoded words decoded) and body of a message or
/// part, with line ends made `\n`.
fn split_entity(raw: &str) -> (Vec<(String, String)>, String) {
    let text = raw.replace("\r\n", "\n");
    let (head, body) = match text.split_once("\n\n") {
        Some((head, body)) => (head.to_owned(), body.to_owned()),
        None => (text.clone(), String::new()),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim_start().to_owned()));
        }
    }
    for (_, value) in &mut headers {
        *value = decode_encoded_words(value.trim());
    }
    (headers, body)
}

/// The leaf parts of an entity, decoded, depth first.
fn collect_parts(headers: &[(String, String)], body: &str, out: &mut Vec<MimePart>) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let content_type = header("Content-Type").unwrap_or("text/plain");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        let boundary = parameter(content_type, "boundary").expect("multipart boundary");
        let delimiter = format!("--{boundary}");
        for (i, chunk) in body.split(delimiter.as_str()).enumerate() {
            // Before the first delimiter is the preamble; after `--` the epilogue.
            if i == 0 || chunk.starts_with("--") {
                continue;
            }
            let chunk = chunk.strip_prefix('\n').unwrap_or(chunk);
            let chunk = chunk.strip_suffix('\n').unwrap_or(chunk);
            let (part_headers, part_body) = split_entity(chunk);
            collect_parts(&part_headers, &part_body, out);
        }
        return;
    }
    let encoding = header("Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => decode_base64(body),
        _ => body.as_bytes().to_vec(),
    };
    out.push(MimePart {
        content_type: mime,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    });
}

/// The value of `name=value` or `name="value"` in a header's parameters.
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

fn decode_quoted_printable(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut lines = body.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.trim_end_matches([' ', '\t', '\r']);
        let (line, soft_break) = match line.strip_suffix('=') {
            Some(line) => (line, true),
            None => (line, false),
        };
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && let Some(byte) = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        if !soft_break && lines.peek().is_some() {
            out.push(b'\n');
        }
    }
    out
}

fn decode_base64(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// `value` with its RFC 2047 encoded words (`=?utf-8?b?…?=`,
/// `=?utf-8?q?…?=`) decoded; the blank between two encoded words goes.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let Some(decoded_len) = encoded_word(&rest[start..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        let (decoded, len) = decoded_len;
        let gap = &rest[..start];
        if !(after_word && gap.trim().is_empty()) {
            out.push_str(gap);
        }
        out.push_str(&decoded);
        rest = &rest[start + len..];
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// The decoded text and length of the encoded word that `text` starts with.
fn encoded_word(text: &str) -> Option<(String, usize)> {
    let inner = text.strip_prefix("=?")?;
    let (_charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let payload = &inner[..end];
    if payload.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        "b" | "B" => decode_base64(payload),
        "q" | "Q" => decode_quoted_printable(&payload.replace('_', " ")),
        _ => return None,
    };
    let len = text.len() - inner.len() + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_and_encoded_words_decode() {
        assert_eq!(
            decode_quoted_printable("a=3Db long=\n line\nnext =C3=A9"),
            "a=b long line\nnext é".as_bytes()
        );
        assert_eq!(
            decode_encoded_words("=?utf-8?b?w6k=?= =?utf-8?q?_x=C3=A9?= plain"),
            "é xé plain"
        );
        assert_eq!(decode_base64("aGVsbG8="), b"hello");
    }

    /// Sends `command` (unless empty) and reads the whole reply, returning
    /// its code.
    async fn exchange(
        read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        write: &mut tokio::net::tcp::OwnedWriteHalf,
        command: &str,
    ) -> u16 {
        if !command.is_empty() {
            write.write_all(command.as_bytes()).await.expect("send");
        }
        loop {
            let mut line = String::new();
            read.read_line(&mut line).await.expect("reply");
            assert!(line.len() >= 4, "{command:?}: {line:?}");
            if line.as_bytes()[3] == b' ' {
                return line[..3].parse().expect("reply code");
            }
        }
    }

    #[tokio::test]
    async fn the_sink_speaks_smtp_and_unstuffs_dots() {
        let sink = SmtpSink::start().await;
        let stream = TcpStream::connect(("127.0.0.1", sink.port))
            .await
            .expect("connect");
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let w = &mut write;
        assert_eq!(exchange(&mut read, w, "").await, 220);
        assert_eq!(exchange(&mut read, w, "EHLO test\r\n").await, 250);
        assert_eq!(exchange(&mut read, w, "NOOP\r\n").await, 250);
        assert_eq!(
            exchange(&mut read, w, "MAIL FROM:<a@x.test>\r\n").await,
            250
        );
        assert_eq!(exchange(&mut read, w, "RSET\r\n").await, 250);
        assert_eq!(
            exchange(&mut read, w, "MAIL FROM:<b@x.test>\r\n").await,
            250
        );
        assert_eq!(exchange(&mut read, w, "RCPT TO:<c@x.test>\r\n").await, 250);
        assert_eq!(exchange(&mut read, w, "RCPT TO:<d@x.test>\r\n").await, 250);
        assert_eq!(exchange(&mut read, w, "DATA\r\n").await, 354);
        let message = "Subject: dots\r\n\r\n..one\r\ntwo\r\n.\r\n";
        assert_eq!(exchange(&mut read, w, message).await, 250);
        assert_eq!(exchange(&mut read, w, "QUIT\r\n").await, 221);

        let mails = sink.wait_for(1).await;
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].envelope_from, "b@x.test");
        assert_eq!(mails[0].envelope_to, ["c@x.test", "d@x.test"]);
        assert_eq!(mails[0].subject, "dots");
        assert_eq!(mails[0].text_body(), ".one\ntwo\n");
    }

    #[tokio::test]
    async fn lettre_delivers_to_the_sink() {
        use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

        let sink = SmtpSink::start().await;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&sink.url())
            .expect("smtp url")
            .build();
        for n in 1..=2 {
            let message = Message::builder()
                .from("Sender <s@x.test>".parse().expect("from"))
                .to("r@x.test".parse().expect("to"))
                .subject(format!("Grüße {n}"))
                .body(format!("line\r\n.starts with a dot\r\n{n}"))
                .expect("message");
            transport.send(message).await.expect("delivered");
        }
        let mails = sink.wait_for(2).await;
        assert_eq!(mails.len(), 2);
        for (n, mail) in (1..=2).zip(&mails) {
            assert_eq!(mail.envelope_from, "s@x.test");
            assert_eq!(mail.envelope_to, ["r@x.test"]);
            assert_eq!(mail.subject, format!("Grüße {n}"));
            assert_eq!(mail.from(), "Sender <s@x.test>");
            assert_eq!(mail.text_body(), format!("line\n.starts with a dot\n{n}\n"));
        }
    }
}
