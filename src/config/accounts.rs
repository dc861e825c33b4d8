//! Settings of accounts (`[accounts]`: verification, password reset,
//! invitations) and of email delivery (`[email]`: outbox relay, worker, queue).
//! SMTP itself is `[smtp]` in the parent module.

use serde::Deserialize;

use super::{AppEnv, Config};

/// One-time links and what an unverified account may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AccountsConfig {
    /// Where the web app lives; links in emails point at its pages.
    pub public_url: String,
    /// May an account whose email is not verified start generations and create API keys?
    pub unverified_may_spend: bool,
    pub verify_token_ttl_secs: u64,
    pub reset_token_ttl_secs: u64,
    pub invite_token_ttl_secs: u64,
    /// Verification resends allowed per account per window.
    pub resend_max: u32,
    pub resend_window_secs: u64,
    /// Password-reset requests allowed per window, per email and per client IP.
    pub reset_max_per_email: u32,
    pub reset_max_per_ip: u32,
    pub reset_window_secs: u64,
    /// Invitations one workspace may send per hour.
    pub invites_per_hour: u32,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            unverified_may_spend: false,
            verify_token_ttl_secs: 86_400,
            reset_token_ttl_secs: 3_600,
            invite_token_ttl_secs: 7 * 86_400,
            resend_max: 3,
            resend_window_secs: 3_600,
            reset_max_per_email: 3,
            reset_max_per_ip: 20,
            reset_window_secs: 3_600,
            invites_per_hour: 50,
        }
    }
}

/// The outbox relay, the RabbitMQ topology and the email worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EmailConfig {
    /// The `From:` of every email.
    pub from: String,
    /// Name of the work queue; retry and dead-letter queues are named after it.
    pub queue: String,
    /// Declare the queues with `x-expires` (ms): unused queues disappear. For tests.
    pub queue_expires_ms: Option<u64>,
    /// Relay `email_outbox` rows to RabbitMQ from `serve`.
    pub relay: bool,
    /// Also run the worker inside `serve` (no separate `switchboard worker email`).
    pub worker_in_serve: bool,
    pub relay_interval_ms: u64,
    pub relay_batch: i64,
    /// Deliveries in flight per worker.
    pub prefetch: u16,
    /// Attempts before a message goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Backoff between attempts: base × 2^(attempt-1), capped.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// A worker that died mid-send holds a message this long before another may send it.
    pub send_lease_secs: u64,
    /// Where `switchboard worker email` serves `/ready` and `/metrics`.
    pub worker_addr: String,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            from: "Switchboard <no-reply@switchboard.local>".into(),
            queue: "switchboard.email".into(),
            queue_expires_ms: None,
            relay: true,
            worker_in_serve: false,
            relay_interval_ms: 500,
            relay_batch: 100,
            prefetch: 16,
            max_attempts: 8,
            retry_base_ms: 2_000,
            retry_max_ms: 600_000,
            send_lease_secs: 120,
            worker_addr: "127.0.0.1:9091".into(),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587); refuses servers without it.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: local sinks and relays only.
    None,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

impl Config {
    /// Problems of `[accounts]`, `[email]` and `[smtp]`.
    pub(super) fn check_accounts(&self, p: &mut Vec<String>) {
        let (a, e) = (&self.accounts, &self.email);
        super::validate::check_url(p, "PUBLIC_URL", &a.public_url, &["http", "https"]);
        for (name, v) in [
            ("accounts.verify_token_ttl_secs", a.verify_token_ttl_secs),
            ("accounts.reset_token_ttl_secs", a.reset_token_ttl_secs),
            ("accounts.invite_token_ttl_secs", a.invite_token_ttl_secs),
            ("accounts.resend_window_secs", a.resend_window_secs),
            ("accounts.reset_window_secs", a.reset_window_secs),
            ("email.relay_interval_ms", e.relay_interval_ms),
            ("email.retry_base_ms", e.retry_base_ms),
            ("email.send_lease_secs", e.send_lease_secs),
        ] {
            if v == 0 {
                p.push(format!("{name} must be greater than 0"));
            }
        }
        if a.resend_max == 0 || a.reset_max_per_email == 0 || a.reset_max_per_ip == 0 {
            p.push("accounts: resend and reset limits must be greater than 0".into());
        }
        if e.retry_max_ms < e.retry_base_ms {
            p.push("email.retry_max_ms must not be below email.retry_base_ms".into());
        }
        if !(1..=20).contains(&e.max_attempts) {
            p.push("email.max_attempts must be between 1 and 20".into());
        }
        if e.relay_batch <= 0 || e.prefetch == 0 {
            p.push("email.relay_batch and email.prefetch must be greater than 0".into());
        }
        let queue_ok = !e.queue.is_empty()
            && e.queue.len() <= 200
            && e.queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !queue_ok {
            p.push("email.queue must be 1 to 200 of A-Z a-z 0-9 . _ -".into());
        }
        if e.from.parse::<lettre::message::Mailbox>().is_err() {
            p.push(format!("EMAIL_FROM is not a valid mailbox ({:?})", e.from));
        }
        if e.worker_addr.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "email.worker_addr must be host:port (got {:?})",
                e.worker_addr
            ));
        }
        let smtp = &self.smtp;
        // SMTP_HOST is not required here: only the worker needs it, and
        // `switchboard worker email` refuses to start without it in production.
        if let Some(h) = &smtp.host
            && (h.trim().is_empty() || h.contains(['/', ' ']))
        {
            p.push(format!("SMTP_HOST is not a host name ({h:?})"));
        }
        if smtp.user.is_some() != smtp.pass.is_some() {
            p.push("SMTP_USER and SMTP_PASS must be set together".into());
        }
        if self.env == AppEnv::Production && smtp.tls == SmtpTls::None && smtp.user.is_some() {
            p.push("SMTP_TLS=none would send SMTP_PASS in clear; use starttls or tls".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(env: AppEnv, vars: &[(&str, &str)]) -> Config {
        Config::load_from(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            env,
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
    }

    #[test]
    fn environment_variables_reach_the_sections() {
        let c = load(
            AppEnv::Development,
            &[
                ("SMTP_HOST", "smtp.example.com"),
                ("SMTP_PORT", "2525"),
                ("SMTP_TLS", "tls"),
                ("EMAIL_FROM", "Team <team@example.com>"),
                ("PUBLIC_URL", "https://app.example.com"),
            ],
        );
        assert_eq!(c.smtp.host.as_deref(), Some("smtp.example.com"));
        assert_eq!(c.smtp.port, Some(2525));
        assert_eq!(c.smtp.tls, SmtpTls::Tls);
        assert_eq!(c.email.from, "Team <team@example.com>");
        assert_eq!(c.accounts.public_url, "https://app.example.com");
        assert!(
            c.accounts.unverified_may_spend,
            "development lets unverified accounts chat"
        );
        assert!(
            c.email.worker_in_serve,
            "development runs the worker in serve"
        );
        assert!(!load(AppEnv::Production, &[]).accounts.unverified_may_spend);
        assert_eq!(c.problems(), Vec::<String>::new());
    }

    #[test]
    fn every_email_problem_is_listed() {
        let mut c = load(AppEnv::Development, &[]);
        c.accounts.public_url = "ftp://x".into();
        c.email.from = "not a mailbox".into();
        c.email.queue = "bad queue!".into();
        c.email.max_attempts = 0;
        c.email.retry_max_ms = 1;
        c.email.worker_addr = "nowhere".into();
        c.smtp.user = Some("me".into());
        let p = c.problems();
        for needle in [
            "PUBLIC_URL",
            "EMAIL_FROM",
            "email.queue",
            "email.max_attempts",
            "email.retry_max_ms",
            "email.worker_addr",
            "SMTP_USER and SMTP_PASS",
        ] {
            assert!(p.iter().any(|x| x.contains(needle)), "{needle} in {p:#?}");
        }
    }
}
