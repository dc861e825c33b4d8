//! A local SMTP server for tests, speaking enough SMTP for lettre (EHLO/HELO,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT). It can refuse the next N messages
//! with a 4xx, as a mail server in trouble does, and records what it accepts.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    /// The raw message (headers and body) as received, dot-unstuffed.
    pub data: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let prefix = format!("{}:", name.to_ascii_lowercase());
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }

    pub fn subject(&self) -> String {
        self.header("subject").unwrap_or_default()
    }

    pub fn message_id(&self) -> String {
        self.header("message-id").unwrap_or_default()
    }

    /// The body with quoted-printable and base64 parts decoded.
    pub fn text(&self) -> String {
        use base64::Engine;
        let mut out = String::new();
        let mut encoding = String::new();
        let mut in_headers = false;
        let mut b64 = String::new();
        for line in self.data.split("\r\n") {
            if line.starts_with("--") {
                flush_b64(&mut b64, &mut out);
                in_headers = true;
                encoding.clear();
                continue;
            }
            if in_headers {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-transfer-encoding:") {
                    encoding = v.trim().to_owned();
                }
                if line.is_empty() {
                    in_headers = false;
                }
                continue;
            }
            match encoding.as_str() {
                "base64" => b64.push_str(line.trim()),
                "quoted-printable" => match line.strip_suffix('=') {
                    Some(soft) => out.push_str(&qp(soft)),
                    None => {
                        out.push_str(&qp(line));
                        out.push('\n');
                    }
                },
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        flush_b64(&mut b64, &mut out);
        fn flush_b64(b64: &mut String, out: &mut String) {
            if !b64.is_empty() {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes())
                {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    out.push('\n');
                }
                b64.clear();
            }
        }
        out
    }

    /// The token of the first link to `{public_url}/{page}?token=`.
    pub fn token_for(&self, page: &str) -> Option<String> {
        let text = self.text();
        let marker = format!("/{page}?token=");
        let at = text.find(&marker)? + marker.len();
        let token: String = text[at..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        (!token.is_empty()).then_some(token)
    }
}

fn qp(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    refuse: Arc<AtomicU32>,
    refused: Arc<AtomicU32>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Self {
            port: listener.local_addr().unwrap().port(),
            mails: Arc::default(),
            refuse: Arc::default(),
            refused: Arc::default(),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.session(socket).await;
                });
            }
        });
        sink
    }

    /// Answer the next `n` MAIL FROM commands with `451`.
    pub fn refuse_next(&self, n: u32) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    pub fn mails_to(&self, to: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .collect()
    }

    /// Waits (up to 20 s) for a mail to `to` whose subject contains `subject`.
    pub async fn wait_for(&self, to: &str, subject: &str) -> Mail {
        for _ in 0..400 {
            if let Some(m) = self
                .mails_to(to)
                .into_iter()
                .find(|m| m.subject().contains(subject))
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no mail to {to} about {subject:?}; got {:?}",
            self.mails()
                .iter()
                .map(|m| (m.to.clone(), m.subject()))
                .collect::<Vec<_>>()
        );
    }

    /// Waits until `n` mails have arrived (and fails if more do).
    pub async fn wait_for_count(&self, n: usize) -> Vec<Mail> {
        for _ in 0..600 {
            if self.mails().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mails = self.mails();
        assert_eq!(mails.len(), n, "mails received");
        mails
    }

    async fn session(&self, socket: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 sink ESMTP ready\r\n").await?;
        let mut to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let cmd = line.trim_end().to_owned();
            let verb = cmd
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n",
                "HELO" | "NOOP" => b"250 OK\r\n",
                "RSET" => {
                    to.clear();
                    b"250 OK\r\n"
                }
                "MAIL" => {
                    to.clear();
                    let left = self.refuse.load(Ordering::SeqCst);
                    if left > 0 {
                        self.refuse.store(left - 1, Ordering::SeqCst);
                        self.refused.fetch_add(1, Ordering::SeqCst);
                        b"451 4.3.0 temporarily unavailable, try again later\r\n"
                    } else {
                        b"250 OK\r\n"
                    }
                }
                "RCPT" => {
                    let addr = cmd
                        .split_once(':')
                        .map(|(_, a)| a.trim().trim_start_matches('<'))
                        .and_then(|a| a.split('>').next())
                        .unwrap_or("")
                        .to_owned();
                    to.push(addr);
                    b"250 OK\r\n"
                }
                "DATA" => {
                    write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    }
                    self.mails.lock().unwrap().push(Mail {
                        to: std::mem::take(&mut to),
                        data,
                    });
                    b"250 OK queued\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await?;
                    return Ok(());
                }
                _ => b"502 command not implemented\r\n",
            };
            write.write_all(reply).await?;
        }
    }
}
