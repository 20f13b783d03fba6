//! A small scriptable SMTP server for tests: a real TCP peer speaking enough ESMTP (EHLO, AUTH
//! PLAIN/LOGIN, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT) to receive mail from
//! lettre, and told to refuse recipients, refuse logins, or drop the connection.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the server does at RCPT TO (and whether it checks a login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    Accept,
    /// Answers RCPT TO with this reply line, e.g. `550 5.1.1 unknown user`.
    RejectRecipient(String),
    /// Closes the connection instead of answering RCPT TO.
    DropAtRecipient,
    /// Refuses every AUTH with 535.
    RejectLogin,
}

/// One received mail.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent, dot-unstuffed, CRLF line ends.
    pub data: String,
    /// The decoded AUTH PLAIN credentials, if any.
    pub login: Option<(String, String)>,
}

/// A running test SMTP server.
#[derive(Clone)]
pub struct SmtpServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl SmtpServer {
    /// Starts a server on 127.0.0.1 with the given behaviour.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (store, behaviour) = (store.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let _ = session(socket, behaviour, store).await;
                });
            }
        });
        Ok(Self { port, received })
    }

    /// Every mail received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn decode_plain(b64: &str) -> Option<(String, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let mut parts = raw
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let _authzid = parts.next()?;
    Some((parts.next()?, parts.next()?))
}

async fn session(
    socket: tokio::net::TcpStream,
    behaviour: Behaviour,
    store: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 test.local ESMTP ready\r\n").await?;
    let mut current: Option<Received> = None;
    let mut login = None;
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-test.local\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 OK"
                .into()
        } else if upper.starts_with("HELO") {
            "250 test.local".into()
        } else if upper.starts_with("AUTH PLAIN") {
            if behaviour == Behaviour::RejectLogin {
                "535 5.7.8 Authentication credentials invalid".into()
            } else {
                login = line.get(11..).and_then(decode_plain);
                "235 2.7.0 Authentication successful".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            current = Some(Received {
                mail_from: line[10..].trim().to_owned(),
                rcpt_to: Vec::new(),
                data: String::new(),
                login: login.clone(),
            });
            "250 2.1.0 OK".into()
        } else if upper.starts_with("RCPT TO:") {
            match &behaviour {
                Behaviour::RejectRecipient(reply) => reply.clone(),
                Behaviour::DropAtRecipient => return Ok(()),
                _ => {
                    if let Some(m) = current.as_mut() {
                        m.rcpt_to.push(line[8..].trim().to_owned());
                    }
                    "250 2.1.5 OK".into()
                }
            }
        } else if upper == "DATA" {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push_str("\r\n");
            }
            if let Some(mut m) = current.take() {
                m.data = data;
                if let Ok(mut s) = store.lock() {
                    s.push(m);
                }
            }
            "250 2.0.0 OK queued".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            "250 OK".into()
        } else {
            "502 5.5.2 Command not recognized".into()
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
    Ok(())
}
