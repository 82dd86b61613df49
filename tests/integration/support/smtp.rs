//! A real SMTP server for the tests: `tests/smtp_sink.py`, an aiosmtpd server
//! that writes each message it receives to a directory, and the messages read
//! back from there.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long `SmtpSink::start` waits for the server to listen, and
/// `SmtpSink::wait_for` for the messages to arrive.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running `tests/smtp_sink.py` on 127.0.0.1, plain SMTP without TLS or
/// AUTH, accepting every message. Stopped (and its directory removed) on
/// drop; it also stops by itself when the test process ends, as its
/// standard input closes.
pub struct SmtpSink {
    child: Mutex<Child>,
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    port: u16,
}

impl SmtpSink {
    /// Starts the sink on a port the system picks and returns once it
    /// listens. Needs `python3` with `aiosmtpd`.
    pub async fn start() -> SmtpSink {
        let dir = std::env::temp_dir().join(format!("usermgmt-smtp-sink-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the SMTP sink's directory");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let announced = tokio::task::spawn_blocking(move || read_port(stdout));
        let port = match tokio::time::timeout(PATIENCE, announced).await {
            Ok(Ok(Some(port))) => port,
            outcome => {
                let _ = child.kill();
                let status = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "the SMTP sink did not say where it listens ({outcome:?}, {status:?}); \
                     is aiosmtpd installed (python3 -m pip install aiosmtpd)?"
                );
            }
        };
        SmtpSink {
            child: Mutex::new(child),
            stdin,
            dir,
            port,
        }
    }

    /// `smtp://127.0.0.1:PORT`: plain SMTP, as the mailer's `smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, in the order received.
    pub fn messages(&self) -> Vec<Received> {
        let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .expect("read the SMTP sink's directory")
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let n = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".eml")?
                    .parse()
                    .ok()?;
                Some((n, path))
            })
            .collect();
        numbered.sort();
        numbered
            .into_iter()
            .map(|(_, path)| {
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                Received::parse(&String::from_utf8_lossy(&bytes))
            })
            .collect()
    }

    /// Waits until at least `n` messages have arrived and returns them all;
    /// panics after 30 s or if the sink has exited.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if let Ok(Some(status)) = self.child.lock().expect("child").try_wait() {
                panic!(
                    "the SMTP sink exited ({status}) with {} of {n} messages",
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
        drop(self.stdin.take());
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The port of the first `listening on HOST:PORT` line, or `None` at the
/// end of the output.
fn read_port(stdout: std::process::ChildStdout) -> Option<u16> {
    use std::io::BufRead as _;
    std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("listening on ")?
                .trim()
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
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

    /// The first link with a `token=` parameter in the plain-text body;
    /// panics when there is none.
    pub fn link(&self) -> &str {
        self.text_body()
            .split_whitespace()
            .find(|word| {
                (word.starts_with("http://") || word.starts_with("https://"))
                    && (word.contains("?token=") || word.contains("&token="))
            })
            .unwrap_or_else(|| panic!("no link with a token in\n{}", self.text_body()))
    }

    /// The `token` parameter of `link()`, as it stands there.
    pub fn token(&self) -> &str {
        let link = self.link();
        let at = link
            .find("?token=")
            .or_else(|| link.find("&token="))
            .expect("token parameter");
        let token = &link[at + "?token=".len()..];
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
}
