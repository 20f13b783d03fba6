use async_trait::async_trait;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{SmtpConfig, TlsMode};
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, SendContext,
};

/// An SMTP e-mail channel.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    /// The domain of the sender, for Message-IDs.
    domain: String,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("from", &self.from.email.to_string())
            .finish()
    }
}

impl Smtp {
    /// Parses the addresses and sets up the pooled transport (connections open on first use).
    pub fn new(cfg: &SmtpConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        // The pool runs a task of its own: building needs the runtime it will live in.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::Http(
                "the SMTP pool must be built inside the Tokio runtime".into(),
            ));
        }
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| BuildError::invalid("from", format!("not an e-mail address: {e}")))?;
        let reply_to = match &cfg.reply_to {
            Some(r) => Some(r.parse::<Mailbox>().map_err(|e| {
                BuildError::invalid("reply_to", format!("not an e-mail address: {e}"))
            })?),
            None => None,
        };
        let builder = match cfg.tls {
            TlsMode::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone()).port(25)
            }
            TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)
                .map_err(|e| BuildError::invalid("host", e.to_string()))?,
            TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host)
                .map_err(|e| BuildError::invalid("host", e.to_string()))?,
        };
        let mut builder = builder
            .timeout(Some(ctx.timeouts.total))
            .pool_config(PoolConfig::new().max_size(cfg.pool_size.max(1)));
        if let Some(port) = cfg.port {
            builder = builder.port(port);
        }
        if let Some(name) = &cfg.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        match (&cfg.username, &cfg.password) {
            (Some(user), Some(password)) => {
                builder = builder
                    .credentials(Credentials::new(user.clone(), password.expose().to_owned()));
            }
            (None, None) => {}
            _ => {
                return Err(BuildError::invalid(
                    "username",
                    "give both username and password, or neither",
                ));
            }
        }
        let domain = from.email.domain().to_owned();
        Ok(Self {
            transport: builder.build(),
            from,
            reply_to,
            domain,
        })
    }

    fn build(&self, msg: &Message) -> Result<(lettre::Message, String), DeliveryError> {
        let to: Mailbox = msg
            .to
            .parse()
            .map_err(|e| DeliveryError::invalid_recipient("invalid_address", format!("{e}")))?;
        let message_id = format!("<{}@{}>", msg.id, self.domain);
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(msg.subject.clone().unwrap_or_default())
            .message_id(Some(message_id.clone()))
            .date_now();
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        if let Some(url) = &msg.list_unsubscribe {
            // RFC 8058: the one-click link, and the header that says a POST to it unsubscribes.
            builder = builder
                .header(ListUnsubscribe(format!("<{url}>")))
                .header(ListUnsubscribePost);
        }
        let built = match (msg.body.clone(), msg.html.clone()) {
            (Some(text), Some(html)) => {
                builder.multipart(MultiPart::alternative_plain_html(text, html))
            }
            (Some(text), None) => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(text),
            ),
            (None, Some(html)) => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html),
            ),
            (None, None) => {
                return Err(DeliveryError::permanent(
                    "missing_content",
                    "no body or html",
                ));
            }
        };
        let email = built.map_err(|e| DeliveryError::permanent("unbuildable", e.to_string()))?;
        Ok((email, message_id))
    }
}

/// `List-Unsubscribe: <https://…>` (RFC 2369).
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

/// Maps an SMTP failure: 4xx and connection trouble are retried; 5xx are rejections, the
/// mailbox ones (550, 551, 553) as invalid recipients; our login refused is a channel fault.
pub(super) fn classify(err: &lettre::transport::smtp::Error) -> DeliveryError {
    if let Some(code) = err.status() {
        let code_text = format!("smtp_{code}");
        let reason = err.to_string();
        return match code.to_string().as_str() {
            "530" | "534" | "535" | "538" => DeliveryError::channel_fault(code_text, reason),
            "550" | "551" | "553" => DeliveryError::invalid_recipient(code_text, reason),
            c if c.starts_with('4') => DeliveryError::transient(code_text, reason),
            _ => DeliveryError::permanent(code_text, reason),
        };
    }
    if err.is_timeout() {
        return DeliveryError::transient("timeout", err.to_string());
    }
    if err.is_client() {
        return DeliveryError::permanent("smtp_client", err.to_string());
    }
    // Connection refused or reset, TLS handshake, an unreadable reply: try again later.
    DeliveryError::transient("connection", describe(err))
}

fn describe(err: &lettre::transport::smtp::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Channel for Smtp {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        msg.to.parse::<Mailbox>().map_err(|e| {
            FieldError::new(
                "to",
                "invalid_recipient",
                format!("not an e-mail address: {e}"),
            )
        })?;
        if msg.subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
            return Err(FieldError::new(
                "subject",
                "missing_content",
                "an e-mail needs a subject",
            ));
        }
        if msg.body.is_none() && msg.html.is_none() {
            return Err(FieldError::new(
                "body",
                "missing_content",
                "an e-mail needs a body or html",
            ));
        }
        Ok(())
    }

    async fn send(&self, msg: &Message, _ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let (email, message_id) = self.build(msg)?;
        self.transport.send(email).await.map_err(|e| classify(&e))?;
        Ok(Receipt {
            provider_id: Some(message_id),
        })
    }
}
