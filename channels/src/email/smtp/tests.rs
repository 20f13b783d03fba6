use std::time::{Duration, SystemTime};

use base64::Engine;
use mailparse::MailHeaderMap;

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
        list_unsubscribe: None,
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

/// The received message, parsed as a mail client would (headers decoded, parts split).
fn parse(data: &str) -> mailparse::ParsedMail<'_> {
    mailparse::parse_mail(data.as_bytes()).unwrap()
}

fn header(mail: &mailparse::ParsedMail<'_>, name: &str) -> Option<String> {
    mail.headers.get_first_value(name)
}

#[tokio::test]
async fn a_mail_with_text_and_html_arrives_as_multipart_alternative() {
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    let receipt = smtp(server.port)
        .send(
            &message(
                Some("Ihre Bestellung ist unterwegs. Grüße ✓"),
                Some("<p>Ihre Bestellung ist <b>unterwegs</b>. Grüße ✓</p>"),
            ),
            &ctx(),
        )
        .await
        .unwrap();

    let got = server.received();
    assert_eq!(got.len(), 1);
    let received = &got[0];
    assert_eq!(received.mail_from, "<orders@shop.example>");
    assert_eq!(received.rcpt_to, vec!["<alice@example.com>"]);
    assert_eq!(received.login, Some(("mailer".into(), "pw".into())));

    let mail = parse(&received.data);
    assert_eq!(
        header(&mail, "Subject").as_deref(),
        Some("Votre commande est expédiée ✓"),
        "the RFC 2047 subject decodes to the original"
    );
    let raw_subject = mail
        .headers
        .get_first_header("Subject")
        .unwrap()
        .get_value_raw();
    assert!(
        raw_subject.is_ascii()
            && String::from_utf8_lossy(raw_subject)
                .to_ascii_lowercase()
                .contains("=?utf-8?"),
        "the subject goes out as RFC 2047 encoded words: {}",
        String::from_utf8_lossy(raw_subject)
    );
    assert_eq!(
        header(&mail, "From").as_deref(),
        Some("Shop <orders@shop.example>")
    );
    assert_eq!(header(&mail, "To").as_deref(), Some("alice@example.com"));
    assert_eq!(
        header(&mail, "Reply-To").as_deref(),
        Some("help@shop.example")
    );
    assert_eq!(
        header(&mail, "Message-ID").as_deref(),
        Some("<0190d3a4-0000-7000-8000-00000000abcd@shop.example>")
    );
    assert_eq!(
        receipt.provider_id.as_deref(),
        Some("<0190d3a4-0000-7000-8000-00000000abcd@shop.example>")
    );
    let date = mailparse::dateparse(&header(&mail, "Date").unwrap()).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - date).abs() < 300, "Date {date} is not now ({now})");
    assert_eq!(header(&mail, "MIME-Version").as_deref(), Some("1.0"));

    assert_eq!(mail.ctype.mimetype, "multipart/alternative");
    assert_eq!(mail.subparts.len(), 2);
    // Plain text first: a client shows the last alternative it understands.
    let (text, html) = (&mail.subparts[0], &mail.subparts[1]);
    assert_eq!(text.ctype.mimetype, "text/plain");
    assert_eq!(text.ctype.charset, "utf-8");
    assert_eq!(
        text.get_body().unwrap().trim_end(),
        "Ihre Bestellung ist unterwegs. Grüße ✓"
    );
    assert_eq!(html.ctype.mimetype, "text/html");
    assert_eq!(html.ctype.charset, "utf-8");
    assert_eq!(
        html.get_body().unwrap().trim_end(),
        "<p>Ihre Bestellung ist <b>unterwegs</b>. Grüße ✓</p>"
    );
}

#[tokio::test]
async fn a_text_only_mail_is_a_single_plain_part() {
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    smtp(server.port)
        .send(&message(Some("Just text, déjà vu."), None), &ctx())
        .await
        .unwrap();
    let data = &server.received()[0].data;
    let mail = parse(data);
    assert_eq!(mail.ctype.mimetype, "text/plain");
    assert_eq!(mail.ctype.charset, "utf-8");
    assert!(mail.subparts.is_empty(), "{data}");
    assert_eq!(mail.get_body().unwrap().trim_end(), "Just text, déjà vu.");
}

#[tokio::test]
async fn a_message_with_an_unsubscribe_link_carries_the_one_click_headers() {
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    let url = "https://notify.example.com/v1/unsubscribe/v1.unsubscribe.1795000000000.\
               MDE5MGQzYTQtMDAwMC03MDAwLTgwMDAtMDAwMDAwMDBhYmNk.\
               q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c";
    let msg = Message {
        list_unsubscribe: Some(url.into()),
        ..message(Some("Weekly news"), None)
    };
    smtp(server.port).send(&msg, &ctx()).await.unwrap();
    let data = &server.received()[0].data;
    let mail = parse(data);
    let folded = header(&mail, "List-Unsubscribe").unwrap();
    let unfolded: String = folded.split_whitespace().collect();
    assert_eq!(unfolded, format!("<{url}>"));
    assert_eq!(
        header(&mail, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
}

#[tokio::test]
async fn a_message_without_an_unsubscribe_link_has_no_list_headers() {
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    smtp(server.port)
        .send(&message(Some("Your receipt"), None), &ctx())
        .await
        .unwrap();
    let data = &server.received()[0].data;
    let mail = parse(data);
    assert_eq!(header(&mail, "List-Unsubscribe"), None);
    assert_eq!(header(&mail, "List-Unsubscribe-Post"), None);
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
            list_unsubscribe: None,
            to: "not an address".into(),
            ..message(Some("x"), None)
        })
        .unwrap_err()
        .field,
        "to"
    );
    assert_eq!(
        s.validate(&Message {
            list_unsubscribe: None,
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
