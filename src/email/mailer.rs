//! Sending one rendered email over SMTP (lettre), or, in development with no
//! SMTP host, writing it to the log so `make run` needs nothing else.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::authentication::Credentials,
};

use super::{queue::EmailJob, templates::Rendered};
use crate::config::{AppEnv, Config, SmtpTls};

pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Development without SMTP_HOST: emails go to the log.
    Log,
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// A 5xx answer or an unusable message: retrying cannot help.
    pub permanent: bool,
    pub message: String,
}

impl SendError {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            message: message.into(),
        }
    }
}

impl Mailer {
    pub fn from_config(cfg: &Config) -> Result<Self, String> {
        let smtp = &cfg.smtp;
        let Some(host) = smtp.host.as_deref().filter(|h| !h.is_empty()) else {
            return if cfg.env == AppEnv::Production {
                Err("SMTP_HOST is required".into())
            } else {
                Ok(Self::Log)
            };
        };
        let builder = match smtp.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|e| format!("SMTP_HOST: {e}"))?;
        let timeout = Duration::from_secs(smtp.timeout_secs.max(1));
        let mut builder = builder
            .port(smtp.port.unwrap_or_else(|| smtp.tls.default_port()))
            .timeout(Some(timeout));
        if let (Some(user), Some(pass)) = (&smtp.user, &smtp.pass) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.expose().to_owned()));
        }
        Ok(Self::Smtp(builder.build()))
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Self::Smtp(_) => "smtp",
            Self::Log => "log",
        }
    }

    /// Builds the MIME message (text and HTML alternatives) and sends it.
    pub async fn send(
        &self,
        from: &Mailbox,
        job: &EmailJob,
        r: &Rendered,
    ) -> Result<(), SendError> {
        let to: Mailbox = job
            .to
            .parse()
            .map_err(|e| SendError::permanent(format!("bad recipient: {e}")))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(r.subject.clone())
            // The outbox id, so a receiving system can spot a duplicate too.
            .message_id(Some(format!("<{}@switchboard>", job.id)))
            .multipart(MultiPart::alternative_plain_html(
                r.text.clone(),
                r.html.clone(),
            ))
            .map_err(|e| SendError::permanent(format!("cannot build message: {e}")))?;
        match self {
            Self::Smtp(t) => t.send(message).await.map(drop).map_err(|e| SendError {
                permanent: e.is_permanent(),
                message: e.to_string(),
            }),
            Self::Log => {
                tracing::info!(to = %job.to, subject = %r.subject, body = %r.text, "email (no SMTP_HOST: logged, not sent)");
                Ok(())
            }
        }
    }

    /// Whether the SMTP server answers (connects and greets); for readiness.
    pub async fn probe(&self) -> Result<(), String> {
        match self {
            Self::Smtp(t) => match t.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("SMTP server did not answer NOOP".into()),
                Err(e) => Err(e.to_string()),
            },
            Self::Log => Ok(()),
        }
    }
}
