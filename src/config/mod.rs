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

mod accounts;
mod billing;
pub mod check;
mod documents;
mod edge;
pub mod pricing;
mod providers;
mod validate;
pub use accounts::{AccountsConfig, EmailConfig, SmtpTls};
pub use billing::{BillingConfig, PriceConfig};
pub use documents::DocumentsConfig;
pub use edge::EdgeConfig;
pub use providers::{ProviderLimitsConfig, ProvidersConfig, RoutingConfig, SimulatedConfig};

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
    (
        "STRIPE_WEBHOOK_SECRETS_PREVIOUS",
        "billing.previous_webhook_secrets",
    ),
    ("STRIPE_API_BASE", "billing.api_base"),
    ("STRIPE_PRICE_PRO", "billing.price_pro"),
    ("STRIPE_PRICE_TEAM", "billing.price_team"),
    ("SMTP_HOST", "smtp.host"),
    ("SMTP_USER", "smtp.user"),
    ("SMTP_PASS", "smtp.pass"),
    ("SMTP_PORT", "smtp.port"),
    ("SMTP_TLS", "smtp.tls"),
    ("EMAIL_FROM", "email.from"),
    ("PUBLIC_URL", "accounts.public_url"),
    ("SENTRY_DSN", "telemetry.sentry_dsn"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("OTEL_TRACES_SAMPLER_ARG", "telemetry.trace_sample_ratio"),
];

/// Chat providers Switchboard knows by name.
pub const CHAT_PROVIDERS: &[&str] = &["simulated", "openai", "anthropic", "cloudflare"];
/// Embedding providers Switchboard knows by name.
pub const EMBEDDING_PROVIDERS: &[&str] = &["local", "openai", "cloudflare"];
/// Secrets shorter than this are rejected.
/// A route entry `provider:model`, split; `None` unless both parts are there.
pub fn route_entry(s: &str) -> Option<(&str, &str)> {
    let (provider, model) = s.split_once(':')?;
    (!provider.is_empty() && !model.is_empty()).then_some((provider, model))
}

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
    #[serde(default)]
    pub billing: BillingConfig,
    pub plans: BTreeMap<String, PlanConfig>,
    pub chat: ChatConfig,
    pub ws: WsConfig,
    pub routing: RoutingConfig,
    /// Route aliases: name → ordered `provider:model` candidates.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub simulated: SimulatedConfig,
    #[serde(default)]
    pub accounts: AccountsConfig,
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub documents: DocumentsConfig,
    #[serde(default)]
    pub edge: EdgeConfig,
    pub cluster: ClusterConfig,
}

/// Several nodes on one Postgres and one Redis (docs/ARCHITECTURE.md, "Cluster").
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// How often this node renews its liveness key in Redis.
    pub heartbeat_ms: u64,
    /// A node whose key is this old is dead: survivors take its chats over.
    pub node_ttl_ms: u64,
    /// A chat's generation lease lapses this long after its holder's last renewal.
    pub lease_ttl_ms: u64,
    /// User messages older than this are not re-queued after a crash.
    pub requeue_window_secs: i64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            node_ttl_ms: 5000,
            lease_ttl_ms: 10_000,
            requeue_window_secs: 86_400,
        }
    }
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
    /// After a failed call, Redis is skipped (per-node fallback) this long before one probe.
    pub breaker_cooldown_ms: u64,
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
    /// Sign-ups counted per client IP and in total, per window.
    pub signup_window_secs: u64,
    pub signup_max_per_ip: u32,
    pub signup_max_global: u32,
    /// Threads that hash passwords (argon2); 0 = tokio's blocking pool. Absent: one per CPU.
    #[serde(default)]
    pub argon2_threads: Option<usize>,
    /// How long this node trusts an API key it looked up (0: ask Postgres on
    /// every request). A change made through another node holds within this.
    #[serde(default = "default_key_cache_ms")]
    pub key_cache_ms: u64,
}

fn default_key_cache_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector base URL; traces are exported only when set (docs/OPERATIONS.md).
    pub otlp_endpoint: Option<String>,
    /// Share of new traces kept (0.0–1.0); a trace continues where its parent was sampled.
    pub trace_sample_ratio: f64,
    /// Error reports (panics, 5xx) go to Sentry only when set.
    pub sentry_dsn: Option<Secret>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            sentry_dsn: None,
        }
    }
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
    /// Default: 587 with starttls, 465 with tls, 25 with none.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// Connect and command timeout.
    #[serde(default = "smtp_timeout_default")]
    pub timeout_secs: u64,
}

fn smtp_timeout_default() -> u64 {
    10
}

/// The operator's deployment-wide cost thresholds (alerts at 50/80/100 %).
#[derive(Debug, Clone, Deserialize)]
pub struct AlertsConfig {
    pub global_daily_micros: i64,
    /// Compared with this month's spend projected to the whole month.
    pub global_monthly_micros: i64,
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
                figment = if matches!(
                    *path,
                    "server.port" | "smtp.port" | "telemetry.trace_sample_ratio"
                ) {
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

    pub fn plan(&self, name: &str) -> Option<&PlanConfig> {
        self.plans.get(name)
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
