use std::time::{Duration, SystemTime};

use base64::Engine;

use super::test_server::{Behaviour, SmtpServer};
use super::*;
use crate::{BuildContext, Channel, Message, Secret, SendContext, Timeouts};

fn config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        tls: TlsMode::None,
        username: Some("mailer".into()),
        password: Some(Secret::new("pw")),
        from: "Shop <orders@shop.example>".into(),
        reply_to: Some("help@shop.example".into()),
        hello_name: Some("notifyd.test".into()),
        pool_size: 2,
    }
}

fn smtp(port: u16) -> Smtp {
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(2),
        total: Duration::from_secs(5),
    };
    Smtp::new(
        &config(port),
        &BuildContext {
            channel: "mail".into(),
            timeouts,
        },
    )
    .unwrap()
}

fn message(body: Option<&str>, html: Option<&str>) -> Message {
    Message {
        id: "0190d3a4-0000-7000-8000-00000000abcd".into(),
        channel: "mail".into(),
        to: "alice@example.com".into(),
        subject: Some("Votre commande est expédiée ✓".into()),
        body: body.map(str::to_owned),
        html: html.map(str::to_owned),
        data: None,
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn ctx() -> SendContext {
    SendContext {
        attempt: 1,
        idempotency_key: "x".into(),
    }
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    data.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

/// The Subject header, unfolded, with RFC 2047 encoded words (`=?utf-8?b?...?=`) decoded and
/// the white space between two adjacent encoded words dropped, as RFC 2047 says.
fn decode_subject(data: &str) -> String {
    let mut raw = String::new();
    let mut in_subject = false;
    for line in data.split("\r\n") {
        if let Some(rest) = line.strip_prefix("Subject: ") {
            raw.push_str(rest);
            in_subject = true;
        } else if in_subject && line.starts_with(' ') {
            raw.push_str(line);
        } else if in_subject {
            break;
        }
    }
    let mut out = String::new();
    let mut rest = raw.as_str();
    let mut after_word = false;
    while let Some(start) = rest.find("=?utf-8?b?") {
        let (plain, tail) = rest.split_at(start);
        if !(after_word && plain.trim().is_empty()) {
            out.push_str(plain);
        }
        let tail = &tail["=?utf-8?b?".len()..];
        let end = tail.find("?=").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&tail[..end])
            .unwrap();
        out.push_str(&String::from_utf8(bytes).unwrap());
        rest = &tail[end + 2..];
        after_word = true;
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn a_mail_with_text_and_html_arrives_as_multipart_alternative() {
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    let receipt = smtp(server.port)
        .send(
            &message(
                Some("Your order shipped."),
                Some("<p>Your order <b>shipped</b>.</p>"),
            ),
            &ctx(),
        )
        .await
        .unwrap();

    let got = server.received();
    assert_eq!(got.len(), 1);
    let mail = &got[0];
    assert_eq!(mail.mail_from, "<orders@shop.example>");
    assert_eq!(mail.rcpt_to, vec!["<alice@example.com>"]);
    assert_eq!(mail.login, Some(("mailer".into(), "pw".into())));
    let data = &mail.data;
    assert_eq!(header(data, "From"), Some("Shop <orders@shop.example>"));
    assert_eq!(header(data, "To"), Some("alice@example.com"));
    assert_eq!(header(data, "Reply-To"), Some("help@shop.example"));
    assert_eq!(
        header(data, "Message-ID"),
        Some("<0190d3a4-0000-7000-8000-00000000abcd@shop.example>")
    );
    assert_eq!(
        receipt.provider_id.as_deref(),
        Some("<0190d3a4-0000-7000-8000-00000000abcd@shop.example>")
    );
    assert!(
        header(data, "Date").is_some_and(|d| d.contains(" +0000")),
        "{data}"
    );
    assert_eq!(header(data, "MIME-Version"), Some("1.0"));
    assert!(
        data.contains("Content-Type: multipart/alternative;"),
        "{data}"
    );
    assert!(
        data.contains("Content-Type: text/plain; charset=utf-8"),
        "{data}"
    );
    assert!(
        data.contains("Content-Type: text/html; charset=utf-8"),
        "{data}"
    );
    assert!(data.contains("Your order shipped."), "{data}");
    assert!(data.contains("<p>Your order <b>shipped</b>.</p>"), "{data}");
    assert_eq!(decode_subject(data), "Votre commande est expédiée ✓");
}

#[tokio::test]
async fn a_text_only_mail_is_a_single_plain_part() {
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    smtp(server.port)
        .send(&message(Some("Just text."), None), &ctx())
        .await
        .unwrap();
    let data = &server.received()[0].data;
    assert!(!data.contains("multipart"), "{data}");
    assert!(
        data.contains("Content-Type: text/plain; charset=utf-8"),
        "{data}"
    );
}

#[tokio::test]
async fn an_unknown_mailbox_550_is_an_invalid_recipient_with_the_reply_code() {
    let server = SmtpServer::start(Behaviour::RejectRecipient(
        "550 5.1.1 <alice@example.com>: unknown user".into(),
    ))
    .await
    .unwrap();
    let err = smtp(server.port)
        .send(&message(Some("x"), None), &ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("invalid_recipient", "smtp_550"));
}

#[tokio::test]
async fn a_temporary_451_is_transient() {
    let server = SmtpServer::start(Behaviour::RejectRecipient(
        "451 4.3.0 try again later".into(),
    ))
    .await
    .unwrap();
    let err = smtp(server.port)
        .send(&message(Some("x"), None), &ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "smtp_451"));
}

#[tokio::test]
async fn a_refused_login_is_a_channel_fault() {
    let server = SmtpServer::start(Behaviour::RejectLogin).await.unwrap();
    let err = smtp(server.port)
        .send(&message(Some("x"), None), &ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("channel_fault", "smtp_535"));
}

#[tokio::test]
async fn a_dropped_connection_is_transient() {
    let server = SmtpServer::start(Behaviour::DropAtRecipient).await.unwrap();
    let err = smtp(server.port)
        .send(&message(Some("x"), None), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.class(), "transient", "{err:?}");
}

#[tokio::test]
async fn nobody_listening_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = smtp(port)
        .send(&message(Some("x"), None), &ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "connection"));
}

#[tokio::test]
async fn validate_wants_an_address_a_subject_and_content() {
    let s = smtp(25);
    assert_eq!(
        s.validate(&Message {
            to: "not an address".into(),
            ..message(Some("x"), None)
        })
        .unwrap_err()
        .field,
        "to"
    );
    assert_eq!(
        s.validate(&Message {
            subject: None,
            ..message(Some("x"), None)
        })
        .unwrap_err()
        .field,
        "subject"
    );
    assert_eq!(
        s.validate(&message(None, None)).unwrap_err().code,
        "missing_content"
    );
    assert!(s.validate(&message(None, Some("<p>hi</p>"))).is_ok());
}

#[tokio::test]
async fn a_bad_sender_address_is_refused_at_build() {
    let cfg = SmtpConfig {
        from: "nobody".into(),
        ..config(25)
    };
    let err = Smtp::new(
        &cfg,
        &BuildContext {
            channel: "m".into(),
            timeouts: Timeouts::default(),
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("`from`: not an e-mail address"),
        "{err}"
    );
}

/// A log sink that keeps every formatted event, for tests that check what reaches the logs.
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_smtp_conversation_never_reaches_the_logs_even_at_trace_level() {
    let logs = CapturedLogs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    // The test runtime is single-threaded, so every task of this send logs to this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::trace!("capture works");

    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    smtp(server.port)
        .send(&message(Some("Secret order 4711."), None), &ctx())
        .await
        .unwrap();
    assert_eq!(server.received().len(), 1);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("capture works"), "{text}");
    let auth_plain = base64::engine::general_purpose::STANDARD.encode("\0mailer\0pw");
    assert!(!text.contains(&auth_plain), "AUTH PLAIN logged: {text}");
    assert!(
        !text.contains("Secret order 4711."),
        "mail body logged: {text}"
    );
    assert!(
        !text.contains("alice@example.com"),
        "recipient logged: {text}"
    );
}
