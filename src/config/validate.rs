//! Checking a loaded configuration: every problem at once, as sentences an
//! operator can act on. Used by `serve` (refuses production with any) and by
//! `validate-config`.

use std::path::Path;

use super::{
    AppEnv, CHAT_PROVIDERS, Config, DEV_SECRET_MARK, EMBEDDING_PROVIDERS, MIN_SECRET_LEN, Secret,
    pricing::PriceTable, route_entry,
};

impl Config {
    /// Every problem with these settings; empty when they are fit to serve.
    #[expect(
        clippy::too_many_lines,
        reason = "the list of every check, one line each"
    )]
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let prod = self.env == AppEnv::Production;

        for (name, url, schemes) in [
            (
                "DATABASE_URL",
                &self.database.url,
                &["postgres", "postgresql"][..],
            ),
            ("REDIS_URL", &self.redis.url, &["redis", "rediss"][..]),
            ("AMQP_URL", &self.amqp.url, &["amqp", "amqps"][..]),
        ] {
            match url {
                None => p.push(format!("{name} is required")),
                Some(url) => check_url(&mut p, name, url.expose(), schemes),
            }
        }

        for (name, secret, required) in [
            ("JWT_SECRET", &self.auth.jwt_secret, true),
            (
                "REFRESH_TOKEN_SECRET",
                &self.auth.refresh_token_secret,
                true,
            ),
            ("AUTH_SECRET", &self.auth.auth_secret, prod),
            ("STRIPE_WEBHOOK_SECRET", &self.stripe.webhook_secret, false),
        ] {
            check_secret(&mut p, name, secret.as_ref(), required, prod);
        }
        if let (Some(a), Some(b)) = (&self.auth.jwt_secret, &self.auth.refresh_token_secret)
            && a == b
        {
            p.push("JWT_SECRET and REFRESH_TOKEN_SECRET must differ".into());
        }
        // One leaked key must not unlock the other's tokens.
        for (name, other) in [
            ("JWT_SECRET", &self.auth.jwt_secret),
            ("REFRESH_TOKEN_SECRET", &self.auth.refresh_token_secret),
        ] {
            if let (Some(a), Some(b)) = (&self.auth.auth_secret, other)
                && a == b
            {
                p.push(format!("AUTH_SECRET and {name} must differ"));
            }
        }
        if self.stripe.secret_key.is_some() && self.stripe.webhook_secret.is_none() {
            p.push("STRIPE_WEBHOOK_SECRET is required when STRIPE_SECRET_KEY is set".into());
        }

        check_url(
            &mut p,
            "FRONTEND_URL",
            &self.server.frontend_url,
            &["http", "https"],
        );
        for origin in &self.server.cors_origins {
            check_url(&mut p, "CORS_ORIGIN", origin, &["http", "https"]);
        }
        for (name, url) in [
            ("OPENAI_BASE_URL", &self.providers.openai_base_url),
            ("ANTHROPIC_BASE_URL", &self.providers.anthropic_base_url),
            ("CLOUDFLARE_BASE_URL", &self.providers.cloudflare_base_url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &self.telemetry.otlp_endpoint),
        ] {
            if let Some(url) = url {
                check_url(&mut p, name, url, &["http", "https"]);
            }
        }
        let ratio = self.telemetry.trace_sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            p.push(format!(
                "telemetry.trace_sample_ratio (OTEL_TRACES_SAMPLER_ARG) must be between 0 and 1, got {ratio}"
            ));
        }
        if let Some(dsn) = &self.telemetry.sentry_dsn
            && dsn.expose().parse::<sentry::types::Dsn>().is_err()
        {
            p.push("SENTRY_DSN is not a valid Sentry DSN".into());
        }
        if self.server.body_limit_bytes == 0 {
            p.push("server.body_limit_bytes must be greater than 0".into());
        }
        if self.auth.access_token_ttl_secs == 0 || self.auth.refresh_token_ttl_secs == 0 {
            p.push("auth token lifetimes must be greater than 0".into());
        }
        if self.auth.access_token_ttl_secs >= self.auth.refresh_token_ttl_secs {
            p.push(
                "auth.access_token_ttl_secs must be shorter than auth.refresh_token_ttl_secs"
                    .into(),
            );
        }

        self.check_providers(&mut p);
        self.check_plans(&mut p);
        self.check_chat(&mut p);
        self.check_accounts(&mut p);
        self.check_web(&mut p);
        p.extend(super::billing::problems(self));
        self.check_documents(&mut p);
        self.check_edge(&mut p);
        self.check_cluster(&mut p);
        p
    }

    fn check_cluster(&self, p: &mut Vec<String>) {
        let c = &self.cluster;
        if c.heartbeat_ms == 0 || c.heartbeat_ms * 2 > c.node_ttl_ms {
            p.push(
                "cluster.heartbeat_ms must be above 0 and at most half of cluster.node_ttl_ms"
                    .into(),
            );
        }
        if c.lease_ttl_ms < 1000 {
            p.push("cluster.lease_ttl_ms must be at least 1000".into());
        }
        if c.requeue_window_secs <= 0 {
            p.push("cluster.requeue_window_secs must be above 0".into());
        }
    }

    fn check_web(&self, p: &mut Vec<String>) {
        if !self.web.enabled {
            return;
        }
        for file in ["index.html", "assets/vendor/marked.js"] {
            if !self.web.dir.join(file).is_file() {
                p.push(format!(
                    "web.dir: {} has no {file} (run scripts/build-web.sh, or set web.enabled = false)",
                    self.web.dir.display()
                ));
            }
        }
    }

    fn check_chat(&self, p: &mut Vec<String>) {
        let (chat, ws, sim) = (&self.chat, &self.ws, &self.simulated);
        for (name, value) in [
            ("ws.max_frame_bytes", ws.max_frame_bytes),
            ("ws.outbound_queue", ws.outbound_queue),
            ("ws.max_connections_per_user", ws.max_connections_per_user),
            ("chat.mailbox_limit", chat.mailbox_limit),
            ("chat.max_message_chars", chat.max_message_chars),
        ] {
            if value == 0 {
                p.push(format!("{name} must be greater than 0"));
            }
        }
        if ws.ping_interval_secs == 0 || ws.ping_interval_secs >= ws.idle_timeout_secs {
            p.push("ws.ping_interval_secs must be above 0 and below ws.idle_timeout_secs".into());
        }
        if chat.max_output_tokens == 0 {
            p.push("chat.max_output_tokens must be greater than 0".into());
        }
        if !(0.0..=1.0).contains(&sim.failure_rate) {
            p.push(format!(
                "simulated.failure_rate must be between 0 and 1 (got {})",
                sim.failure_rate
            ));
        }
        match PriceTable::load(Path::new(&chat.pricing_file)) {
            Ok(table) => {
                let routed = self.routes.values().flat_map(|chain| {
                    chain
                        .iter()
                        .filter_map(|c| route_entry(c).map(|(_, model)| model.to_owned()))
                });
                for model in self.providers.models.values().cloned().chain(routed) {
                    if !table.models.contains_key(&model) {
                        p.push(format!(
                            "{}: model {model:?} has no price",
                            chat.pricing_file
                        ));
                    }
                }
            }
            Err(e) => p.push(e.to_string()),
        }
    }

    fn check_providers(&self, p: &mut Vec<String>) {
        let pc = &self.providers;
        for (var, list) in [
            ("LLM_PROVIDER_FREE_TIER", pc.free_tier_list()),
            ("LLM_PROVIDER_PAID_TIER", pc.paid_tier_list()),
        ] {
            if list.is_empty() {
                p.push(format!("{var} must name at least one provider"));
            }
            for name in &list {
                match name.as_str() {
                    "simulated" => {}
                    "openai" if pc.openai_api_key.is_none() && pc.openai_base_url.is_none() => {
                        p.push(format!("{var} names openai but neither OPENAI_API_KEY nor OPENAI_BASE_URL is set"))
                    }
                    "anthropic" if pc.anthropic_api_key.is_none() => {
                        p.push(format!("{var} names anthropic but ANTHROPIC_API_KEY is not set"))
                    }
                    "cloudflare" if pc.cloudflare_api_token.is_none() || pc.cloudflare_account_id.is_none() => p
                        .push(format!(
                            "{var} names cloudflare but CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID are not both set"
                        )),
                    known if CHAT_PROVIDERS.contains(&known) => {}
                    unknown => p.push(format!(
                        "{var}: unknown provider {unknown:?} (known: {})",
                        CHAT_PROVIDERS.join(", ")
                    )),
                }
            }
        }
        for (name, chain) in &self.routes {
            if chain.is_empty() {
                p.push(format!("routes.{name} is empty"));
            }
            for entry in chain {
                match route_entry(entry) {
                    None => p.push(format!("routes.{name}: {entry:?} is not provider:model")),
                    Some((provider, _)) if !CHAT_PROVIDERS.contains(&provider) => {
                        p.push(format!("routes.{name}: unknown provider {provider:?}"))
                    }
                    Some(_) => {}
                }
            }
        }
        for name in CHAT_PROVIDERS {
            if !pc.models.contains_key(*name) {
                p.push(format!(
                    "providers.models.{name} (the default model) is missing"
                ));
            }
        }
        if !EMBEDDING_PROVIDERS.contains(&pc.embedding.as_str()) {
            p.push(format!(
                "EMBEDDING_PROVIDER: unknown provider {:?} (known: {})",
                pc.embedding,
                EMBEDDING_PROVIDERS.join(", ")
            ));
        }
        if pc.embedding == "cloudflare"
            && (pc.cloudflare_api_token.is_none() || pc.cloudflare_account_id.is_none())
        {
            p.push("EMBEDDING_PROVIDER is cloudflare but CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID are not both set".into());
        }
        if pc.embedding == "openai" && pc.openai_api_key.is_none() && pc.openai_base_url.is_none() {
            p.push("EMBEDDING_PROVIDER is openai but neither OPENAI_API_KEY nor OPENAI_BASE_URL is set".into());
        }
    }

    fn check_plans(&self, p: &mut Vec<String>) {
        for required in ["free", "pro", "team"] {
            if !self.plans.contains_key(required) {
                p.push(format!("plans.{required} is missing"));
            }
        }
        for (name, plan) in &self.plans {
            if plan.messages_per_minute == 0 || plan.tokens_per_minute == 0 {
                p.push(format!(
                    "plans.{name}: per-minute limits must be greater than 0"
                ));
            }
            if plan.daily_budget_micros < 0 || plan.monthly_budget_micros < 0 {
                p.push(format!("plans.{name}: budgets cannot be negative"));
            }
            if plan.daily_budget_micros > plan.monthly_budget_micros {
                p.push(format!(
                    "plans.{name}: daily budget ({}) exceeds monthly budget ({})",
                    plan.daily_budget_micros, plan.monthly_budget_micros
                ));
            }
        }
        // A higher tier must not give less than the one below it.
        let tiers: Vec<_> = ["free", "pro", "team"]
            .iter()
            .filter_map(|n| self.plans.get(*n).map(|plan| (*n, plan)))
            .collect();
        for pair in tiers.windows(2) {
            let ((lo_name, lo), (hi_name, hi)) = (pair[0], pair[1]);
            if hi.messages_per_minute < lo.messages_per_minute
                || hi.tokens_per_minute < lo.tokens_per_minute
                || hi.daily_budget_micros < lo.daily_budget_micros
                || hi.monthly_budget_micros < lo.monthly_budget_micros
            {
                p.push(format!("plans.{hi_name} allows less than plans.{lo_name}"));
            }
        }
    }
}

pub(super) fn check_secret(
    p: &mut Vec<String>,
    name: &str,
    secret: Option<&Secret>,
    required: bool,
    prod: bool,
) {
    match secret {
        None if required => p.push(format!("{name} is required")),
        None => {}
        Some(s) => {
            if s.expose().chars().count() < MIN_SECRET_LEN {
                p.push(format!(
                    "{name} must be at least {MIN_SECRET_LEN} characters"
                ));
            }
            if prod && s.expose().starts_with(DEV_SECRET_MARK) {
                p.push(format!("{name} is still the development default"));
            }
            if let Some(why) = low_entropy(s.expose()) {
                p.push(format!("{name} is too predictable ({why}); use a random value, e.g. `openssl rand -hex 32`"));
            }
        }
    }
}

/// Fewest distinct characters a secret may have.
const MIN_SECRET_DISTINCT: usize = 10;
/// Least estimated entropy of a secret, in bits (its length times the Shannon
/// entropy of its own character frequencies): 32 random hex digits give ~110.
const MIN_SECRET_BITS: f64 = 96.0;

/// Why a secret is too guessable (`32 × "a"`, a short repeated word), or
/// `None`. An estimate from the value alone: it cannot see a pattern such as
/// a counting sequence, only a poor alphabet.
pub(super) fn low_entropy(secret: &str) -> Option<String> {
    let mut counts = std::collections::HashMap::<char, usize>::new();
    for c in secret.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let len = secret.chars().count();
    if counts.len() < MIN_SECRET_DISTINCT {
        return Some(format!(
            "{} distinct characters, at least {MIN_SECRET_DISTINCT} needed",
            counts.len()
        ));
    }
    let n = len as f64;
    let per_char: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    let bits = per_char * n;
    (bits < MIN_SECRET_BITS)
        .then(|| format!("about {bits:.0} bits of entropy, at least {MIN_SECRET_BITS:.0} needed"))
}

pub(super) fn check_url(p: &mut Vec<String>, name: &str, value: &str, schemes: &[&str]) {
    match url::Url::parse(value) {
        Err(e) => p.push(format!("{name} is not a valid URL ({e})")),
        Ok(u) if !schemes.contains(&u.scheme()) => p.push(format!(
            "{name} must use {} (got {}://)",
            schemes.join(" or "),
            u.scheme()
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => p.push(format!("{name} has no host")),
        Ok(_) => {}
    }
}
