//! Settings: layered `config/default.toml` < `config/{APP_ENV}.toml` < environment.
//!
//! Owns loading and validation. Validation collects *every* problem before it
//! answers, so an operator fixes a deployment in one pass. Secrets are wrapped in
//! [`Secret`] so that neither `Debug` nor a log line can print them.

use std::{collections::BTreeMap, fmt, path::Path};

use figment::{
    Figment,
    providers::{Format, Toml},
};
use serde::Deserialize;

/// The seed's environment names and where each lands in the settings tree.
pub const ENV_MAP: &[(&str, &str)] = &[
    ("HOST", "server.host"),
    ("PORT", "server.port"),
    ("FRONTEND_URL", "server.frontend_url"),
    ("CORS_ORIGIN", "server.cors_origins"),
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("AMQP_URL", "amqp.url"),
    ("JWT_SECRET", "auth.jwt_secret"),
    ("AUTH_SECRET", "auth.auth_secret"),
    ("REFRESH_TOKEN_SECRET", "auth.refresh_token_secret"),
    ("OPENAI_API_KEY", "providers.openai_api_key"),
    ("OPENAI_BASE_URL", "providers.openai_base_url"),
    ("ANTHROPIC_API_KEY", "providers.anthropic_api_key"),
    ("ANTHROPIC_BASE_URL", "providers.anthropic_base_url"),
    ("CLOUDFLARE_API_TOKEN", "providers.cloudflare_api_token"),
    ("CLOUDFLARE_ACCOUNT_ID", "providers.cloudflare_account_id"),
    ("CLOUDFLARE_BASE_URL", "providers.cloudflare_base_url"),
    ("EMBEDDING_PROVIDER", "providers.embedding"),
    ("EMBEDDING_MODEL", "providers.embedding_model"),
    ("LLM_PROVIDER_FREE_TIER", "providers.free_tier"),
    ("LLM_PROVIDER_PAID_TIER", "providers.paid_tier"),
    ("STRIPE_SECRET_KEY", "stripe.secret_key"),
    ("STRIPE_WEBHOOK_SECRET", "stripe.webhook_secret"),
    ("SMTP_HOST", "smtp.host"),
    ("SMTP_USER", "smtp.user"),
    ("SMTP_PASS", "smtp.pass"),
    ("SENTRY_DSN", "telemetry.sentry_dsn"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
];

/// Chat providers Switchboard knows by name.
pub const CHAT_PROVIDERS: &[&str] = &["simulated", "openai", "anthropic", "cloudflare"];
/// Embedding providers Switchboard knows by name.
pub const EMBEDDING_PROVIDERS: &[&str] = &["local", "openai", "cloudflare"];
/// Secrets shorter than this are rejected.
pub const MIN_SECRET_LEN: usize = 32;
/// Every development default secret starts with this, so production can refuse them.
const DEV_SECRET_MARK: &str = "dev-only-";

/// A value that must never be printed. `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The only way to read the value; grep for it to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl AppEnv {
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("APP_ENV").as_deref() {
            Err(_) | Ok("") | Ok("development") => Ok(Self::Development),
            Ok("test") => Ok(Self::Test),
            Ok("production") => Ok(Self::Production),
            Ok(other) => Err(format!(
                "APP_ENV: unknown environment {other:?} (expected development, test or production)"
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(skip_deserializing, default = "default_env")]
    pub env: AppEnv,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub amqp: AmqpConfig,
    pub auth: AuthConfig,
    pub providers: ProvidersConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub stripe: StripeConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    pub plans: BTreeMap<String, PlanConfig>,
    pub chat: ChatConfig,
    pub ws: WsConfig,
    pub routing: RoutingConfig,
    /// Route aliases: name → ordered `provider:model` candidates.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub simulated: crate::providers::simulated::SimulatedConfig,
}

fn default_env() -> AppEnv {
    AppEnv::Development
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub body_limit_bytes: usize,
    pub shutdown_grace_secs: u64,
    #[serde(deserialize_with = "list_or_csv")]
    pub cors_origins: Vec<String>,
    pub frontend_url: String,
    pub log_format: LogFormat,
    pub trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// Holds a password in most deployments, hence a secret.
    pub url: Option<Secret>,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisConfig {
    pub url: Option<Secret>,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AmqpConfig {
    pub url: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthConfig {
    pub jwt_secret: Option<Secret>,
    pub refresh_token_secret: Option<Secret>,
    /// Signs one-time links (email verification, password reset).
    pub auth_secret: Option<Secret>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub issuer: String,
    pub audience: String,
    pub signin_window_secs: u64,
    pub signin_max_per_email: u32,
    pub signin_max_per_ip: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProvidersConfig {
    pub free_tier: String,
    pub paid_tier: String,
    pub embedding: String,
    pub openai_api_key: Option<Secret>,
    pub openai_base_url: Option<String>,
    pub anthropic_api_key: Option<Secret>,
    pub anthropic_base_url: Option<String>,
    pub cloudflare_api_token: Option<Secret>,
    pub cloudflare_account_id: Option<String>,
    /// Base URL of the Cloudflare API (tests point it at a mock).
    pub cloudflare_base_url: Option<String>,
    /// Model of the OpenAI or Cloudflare embedder (each has a default).
    pub embedding_model: Option<String>,
    /// Default model per provider, used when a request names none.
    pub models: BTreeMap<String, String>,
    /// Per-provider limits; `default` applies to providers without their own.
    pub limits: BTreeMap<String, ProviderLimitsConfig>,
}

impl ProvidersConfig {
    pub fn limits_for(&self, name: &str) -> ProviderLimitsConfig {
        self.limits
            .get(name)
            .or_else(|| self.limits.get("default"))
            .copied()
            .unwrap_or(ProviderLimitsConfig {
                concurrency: 64,
                rpm: 0,
                tpm: 0,
                breaker_failures: 5,
                breaker_cooldown_secs: 30,
            })
    }

    pub fn free_tier_list(&self) -> Vec<String> {
        csv(&self.free_tier)
    }
    pub fn paid_tier_list(&self) -> Vec<String> {
        csv(&self.paid_tier)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TelemetryConfig {
    pub otlp_endpoint: Option<String>,
    pub sentry_dsn: Option<Secret>,
}

/// The browser client (web/), served at `/` by `transport::http::web`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebConfig {
    /// Serve the client at all; an API-only deployment turns it off.
    pub enabled: bool,
    /// Directory holding index.html and assets/; relative paths are taken from
    /// the working directory (the repository root under `make run` and tests).
    pub dir: std::path::PathBuf,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: "web".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StripeConfig {
    pub secret_key: Option<Secret>,
    pub webhook_secret: Option<Secret>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SmtpConfig {
    pub host: Option<String>,
    pub user: Option<String>,
    pub pass: Option<Secret>,
}

/// How requests are routed and how providers are protected.
#[derive(Debug, Clone, Deserialize)]
pub struct RoutingConfig {
    /// Order a tier's providers by price (cheapest first) instead of as listed.
    pub prefer_cheapest: bool,
    /// Paid prompts above this many tokens use the `complex` route, when one is defined.
    pub complex_prompt_tokens: u32,
    /// Time allowed for a provider's first token before retrying or falling back.
    pub ttft_timeout_ms: u64,
    /// Retries on one provider before its first token (connect errors, timeouts, 5xx).
    pub max_retries: u32,
    /// Base of the jittered exponential backoff between those retries.
    pub retry_base_ms: u64,
    /// Held reservations expire after this, so a crash never holds budget forever.
    pub reservation_ttl_secs: u64,
    /// Identifies this node's reservations, to release them when it restarts.
    pub node_id: Option<String>,
}

/// The operator's deployment-wide cost thresholds (alerts at 50/80/100 %).
#[derive(Debug, Clone, Deserialize)]
pub struct AlertsConfig {
    pub global_daily_micros: i64,
    /// Compared with this month's spend projected to the whole month.
    pub global_monthly_micros: i64,
}

/// Limits of one provider (`[providers.limits.<name>]`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ProviderLimitsConfig {
    pub concurrency: usize,
    /// Requests per minute, 0 for no limit.
    #[serde(default)]
    pub rpm: u32,
    /// Tokens per minute, 0 for no limit.
    #[serde(default)]
    pub tpm: u32,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long it stays open before one probe is let through.
    pub breaker_cooldown_secs: u64,
}

/// Chat actors: lifetimes, supervision, generation.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatConfig {
    /// A chat actor with no subscriber and no generation stops after this long.
    pub idle_timeout_secs: u64,
    /// A user actor with no connection stops after this long.
    pub user_idle_timeout_secs: u64,
    /// Restarts allowed per actor within `restart_window_secs` before it is given up.
    pub max_restarts: u32,
    pub restart_window_secs: u64,
    /// Requests waiting for one chat actor beyond this are refused (`rate_limited`).
    pub mailbox_limit: usize,
    /// Stop generating when the socket that asked for an answer goes away.
    pub cancel_on_disconnect: bool,
    /// How often a streaming answer's partial text is saved.
    pub checkpoint_ms: u64,
    /// Largest message a user may send, in characters.
    pub max_message_chars: usize,
    /// Output tokens asked of a model per answer.
    pub max_output_tokens: u32,
    /// Earlier turns sent with each prompt.
    pub history_messages: i64,
    /// Path of the price table.
    pub pricing_file: String,
}

/// WebSocket connections.
#[derive(Debug, Clone, Deserialize)]
pub struct WsConfig {
    /// Largest client frame; larger closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// An unauthenticated socket must send `auth` within this, or is closed with 4001.
    pub auth_timeout_secs: u64,
    /// Server pings this often; a peer silent for `idle_timeout_secs` is closed.
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    /// Frames queued for one socket; a reader that falls further behind is closed with 4008.
    pub outbound_queue: usize,
    /// Sockets one user may hold at once.
    pub max_connections_per_user: usize,
}

/// Limits and budgets of one plan tier. Money in micro-dollars.
#[derive(Debug, Clone, Deserialize)]
pub struct PlanConfig {
    pub messages_per_minute: u32,
    pub tokens_per_minute: u32,
    /// Workspace budgets.
    pub daily_budget_micros: i64,
    pub monthly_budget_micros: i64,
    /// Each member's own budgets; the workspace's when absent.
    pub user_daily_budget_micros: Option<i64>,
    pub user_monthly_budget_micros: Option<i64>,
}

impl PlanConfig {
    pub fn user_daily(&self) -> i64 {
        self.user_daily_budget_micros
            .unwrap_or(self.daily_budget_micros)
    }
    pub fn user_monthly(&self) -> i64 {
        self.user_monthly_budget_micros
            .unwrap_or(self.monthly_budget_micros)
    }
}

/// Parses an environment value the way figment's `Env` does (numbers, booleans, arrays).
fn typed(value: &str) -> figment::value::Value {
    value
        .parse()
        .unwrap_or_else(|never: std::convert::Infallible| match never {})
}

fn csv(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Accepts `["a","b"]` from TOML or `"a,b"` from an environment variable.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => csv(&s),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Env(String),
    #[error("cannot read settings: {0}")]
    Load(#[from] Box<figment::Error>),
}

impl Config {
    /// Loads from `config/` under the working directory and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let env = AppEnv::from_env().map_err(ConfigError::Env)?;
        Self::load_from(Path::new("config"), env, std::env::vars())
    }

    /// Loads with an explicit directory and environment, for tests and tools.
    pub fn load_from(
        dir: &Path,
        env: AppEnv,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new()
            .merge(Toml::file(dir.join("default.toml")))
            .merge(Toml::file(dir.join(format!("{}.toml", env.as_str()))));
        for (key, value) in vars {
            if let Some((_, path)) = ENV_MAP.iter().find(|(name, _)| *name == key) {
                // An empty variable means "unset", as with most dotenv tooling.
                if value.is_empty() {
                    continue;
                }
                // Keep secrets and URLs as strings even when they look like numbers.
                figment = if *path == "server.port" {
                    figment.merge((*path, typed(&value)))
                } else {
                    figment.merge((*path, value))
                };
            } else if let Some(rest) = key.strip_prefix("SWITCHBOARD_") {
                // Any other key: SWITCHBOARD_SECTION__KEY=value.
                let path = rest.to_ascii_lowercase().replace("__", ".");
                figment = figment.merge((path, typed(&value)));
            }
        }
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.env = env;
        Ok(config)
    }

    /// Every problem with these settings; empty when they are fit to serve.
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
        p
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
        if self.web.enabled {
            for file in ["index.html", "assets/vendor/marked.js"] {
                if !self.web.dir.join(file).is_file() {
                    p.push(format!(
                        "web.dir: {} has no {file} (run scripts/build-web.sh, or set web.enabled = false)",
                        self.web.dir.display()
                    ));
                }
            }
        }
        match crate::providers::pricing::PriceTable::load(Path::new(&chat.pricing_file)) {
            Ok(table) => {
                let routed = self.routes.values().flat_map(|chain| {
                    chain.iter().filter_map(|c| {
                        crate::providers::router::Router::parse_candidate(c).map(|c| c.model)
                    })
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
                match crate::providers::router::Router::parse_candidate(entry) {
                    None => p.push(format!("routes.{name}: {entry:?} is not provider:model")),
                    Some(c) if !CHAT_PROVIDERS.contains(&c.provider.as_str()) => {
                        p.push(format!("routes.{name}: unknown provider {:?}", c.provider))
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

    pub fn plan(&self, name: &str) -> Option<&PlanConfig> {
        self.plans.get(name)
    }
}

fn check_secret(
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
        }
    }
}

fn check_url(p: &mut Vec<String>, name: &str, value: &str, schemes: &[&str]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("super-secret-value");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert!(!format!("{:?}", Some(s)).contains("super"));
    }

    #[test]
    fn csv_trims_and_skips_empty() {
        assert_eq!(csv(" a, b ,,c"), vec!["a", "b", "c"]);
    }
}
