//! Error reports to Sentry, only when `SENTRY_DSN` (`telemetry.sentry_dsn`)
//! is set: panics (Sentry's panic hook) and 5xx responses
//! ([`report_server_errors`]), each tagged with the request id, route
//! template, method and status.
//!
//! What must not leave: credentials and message content. So reports are
//! built from those tags alone — no request bodies, headers, query strings,
//! users or breadcrumbs (log lines) — and [`scrub`] runs on every event
//! before it is sent: it drops those parts should anything add them, and
//! blanks credential-looking words in the text that remains (a panic
//! message is the one free text that goes out).
//!
//! Off, nothing is installed and the middleware passes requests straight through.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use sentry::{Hub, Level, SentryFutureExt, protocol::Event};

use crate::config::Config;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process reports to Sentry.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts the Sentry client when a DSN is configured; keep the guard for the
/// life of the process: dropping it sends what is queued (up to 2 s).
pub fn init(config: &Config) -> Option<sentry::ClientInitGuard> {
    let dsn = config.telemetry.sentry_dsn.as_ref()?;
    let dsn = match dsn.expose().parse::<sentry::types::Dsn>() {
        Ok(d) => d,
        Err(_) => {
            // The DSN holds a key: say only that it is wrong.
            tracing::error!("SENTRY_DSN is not a valid DSN: error reports are off");
            return None;
        }
    };
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = sentry::release_name!();
    options.environment = Some(Cow::Borrowed(config.env.as_str()));
    options.send_default_pii = false;
    options.max_breadcrumbs = 0;
    options.attach_stacktrace = false;
    options.before_send = Some(Arc::new(|event| Some(scrub(event))));
    options.before_breadcrumb = Some(Arc::new(
        |_: sentry::Breadcrumb| -> Option<sentry::Breadcrumb> { None },
    ));
    let guard = sentry::init(options);
    ENABLED.store(guard.is_enabled(), Ordering::Relaxed);
    if guard.is_enabled() {
        tracing::info!("error reports go to Sentry (panics and 5xx responses)");
    }
    Some(guard)
}

/// Runs the request on a hub of its own tagged with its request id, so a
/// panic inside it is reported with that id, and reports a 5xx answer.
/// Must run inside the request-id layer.
pub async fn report_server_errors(req: Request, next: Next) -> Response {
    if !enabled() {
        return next.run(req).await;
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let hub = Arc::new(Hub::new_from_top(Hub::current()));
    hub.configure_scope(|scope| {
        scope.set_tag("request_id", &request_id);
        scope.set_tag("route", &route);
        scope.set_tag("method", &method);
    });
    let res = next.run(req).bind_hub(hub.clone()).await;
    let status = res.status();
    if status.is_server_error() {
        hub.configure_scope(|scope| scope.set_tag("status", status.as_u16()));
        hub.capture_message(
            &format!("HTTP {} on {method} {route}", status.as_u16()),
            Level::Error,
        );
    }
    res
}

/// Removes every part of an event that could hold a request's data, and
/// blanks credential-looking words in the text left.
pub fn scrub(mut event: Event<'static>) -> Event<'static> {
    event.request = None;
    event.user = None;
    event.breadcrumbs = Default::default();
    event.extra.clear();
    if let Some(m) = &mut event.message {
        *m = scrub_text(m);
    }
    if let Some(entry) = &mut event.logentry {
        entry.message = scrub_text(&entry.message);
        entry.params.clear();
    }
    for e in &mut event.exception.values {
        if let Some(v) = &mut e.value {
            *v = scrub_text(v);
        }
    }
    for (k, v) in &mut event.tags {
        *v = if k == "request_id" {
            scrub_request_id(v)
        } else {
            scrub_text(v)
        };
    }
    event
}

/// A request id is kept when it looks like one (a UUID, or a caller's
/// `req-…` id) although it is a long run of token characters, which
/// [`scrub_text`] blanks: without it a report cannot be found in the logs.
/// Anything else a client put in `x-request-id` is blanked.
pub fn scrub_request_id(id: &str) -> String {
    let id_like = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    let credential = CREDENTIAL_PREFIXES.iter().any(|p| id.starts_with(p));
    if id_like && !credential {
        id.to_owned()
    } else {
        "[redacted]".to_owned()
    }
}

/// How provider, Stripe and our own keys and JWTs begin.
const CREDENTIAL_PREFIXES: &[&str] = &["eyJ", "sk-", "sk_", "rk_", "whsec_", "sb_"];

/// Words that look like a credential become `[redacted]`: the word after
/// `Bearer`, `key=`/`token=`/`password=`-style pairs, JWTs, provider and
/// Stripe keys, and any long unbroken run of token characters.
pub fn scrub_text(text: &str) -> String {
    const KEY_NAMES: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "key",
        "authorization",
        "dsn",
    ];
    let mut out = String::with_capacity(text.len());
    let mut redact_next = false;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_matches(|c: char| "\"'`,;()[]{}<>".contains(c));
        let lower = bare.to_ascii_lowercase();
        let pair = lower
            .split_once(['=', ':'])
            .filter(|(k, v)| !v.is_empty() && KEY_NAMES.iter().any(|n| k.ends_with(n)));
        let secret = redact_next
            || pair.is_some()
            || CREDENTIAL_PREFIXES.iter().any(|p| bare.starts_with(p))
            || (bare.len() >= 24
                && bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.=+/".contains(c)));
        redact_next = lower == "bearer" || lower == "basic";
        if secret && !bare.is_empty() {
            out.push_str(&word.replace(bare, "[redacted]"));
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_text_blanks_credentials_and_keeps_prose() {
        let s = scrub_text(
            "called with Authorization: Bearer abc.def and password=hunter2 key sk-live-123 \
             eyJhbGciOiJIUzI1NiJ9.e30.sig then 0123456789abcdef0123456789abcdef done",
        );
        for secret in [
            "abc.def",
            "hunter2",
            "sk-live-123",
            "eyJhbGci",
            "0123456789abcdef",
        ] {
            assert!(!s.contains(secret), "{secret} left in {s}");
        }
        assert!(s.starts_with("called with Authorization: Bearer [redacted] and"));
        assert!(s.ends_with("then [redacted] done"));
        assert_eq!(
            scrub_text("chat actor panicked at src/x.rs:10"),
            "chat actor panicked at src/x.rs:10"
        );
    }

    #[test]
    fn request_ids_are_kept_and_credentials_in_their_place_are_not() {
        for id in [
            "0b9e5a4e-4a8f-4a53-9a9b-6f1d2e3c4b5a",
            "req-3c9243f34e1747979e0d5a7240c3cefc",
        ] {
            assert_eq!(scrub_request_id(id), id);
        }
        for bad in [
            "sk-live-0123456789abcdef",
            "eyJhbGciOiJIUzI1NiJ9.e30.sig",
            "Bearer abc",
            "password=hunter2",
            &"a".repeat(65),
        ] {
            assert_eq!(scrub_request_id(bad), "[redacted]", "{bad}");
        }
    }

    #[test]
    fn an_event_keeps_its_request_id_tag_and_loses_request_data() {
        let mut event = Event::default();
        event.tags.insert(
            "request_id".into(),
            "req-3c9243f34e1747979e0d5a7240c3cefc".into(),
        );
        event.tags.insert("route".into(), "/api/auth/signin".into());
        event.user = Some(sentry::User::default());
        event.request = Some(sentry::protocol::Request::default());
        let event = scrub(event);
        assert_eq!(
            event.tags["request_id"],
            "req-3c9243f34e1747979e0d5a7240c3cefc"
        );
        assert_eq!(event.tags["route"], "/api/auth/signin");
        assert!(event.user.is_none() && event.request.is_none());
    }
}
