use std::{path::Path, process::Command};

use switchboard::config::{AppEnv, Config};

fn load(env: AppEnv, vars: &[(&str, &str)]) -> Config {
    Config::load_from(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        env,
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("config loads")
}

const GOOD_PROD: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://app:pw@db.internal:5432/switchboard",
    ),
    ("REDIS_URL", "redis://cache.internal:6379"),
    ("AMQP_URL", "amqp://app:pw@mq.internal:5672/%2f"),
    ("JWT_SECRET", "0123456789abcdef0123456789abcdef-jwt"),
    (
        "REFRESH_TOKEN_SECRET",
        "0123456789abcdef0123456789abcdef-refresh",
    ),
    ("AUTH_SECRET", "0123456789abcdef0123456789abcdef-auth"),
    ("FRONTEND_URL", "https://chat.example.com"),
    (
        "CORS_ORIGIN",
        "https://chat.example.com,https://admin.example.com",
    ),
];

fn prod_with(overrides: &[(&'static str, &'static str)]) -> Vec<String> {
    let mut vars: Vec<(&str, &str)> = GOOD_PROD
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .copied()
        .collect();
    vars.extend(overrides.iter().filter(|(_, v)| !v.is_empty()));
    load(AppEnv::Production, &vars).problems()
}

fn assert_problem(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning {needle:?}, got {problems:#?}"
    );
}

#[test]
fn development_defaults_are_valid() {
    assert_eq!(
        load(AppEnv::Development, &[]).problems(),
        Vec::<String>::new()
    );
    assert_eq!(load(AppEnv::Test, &[]).problems(), Vec::<String>::new());
}

#[test]
fn a_complete_production_config_is_valid() {
    assert_eq!(prod_with(&[]), Vec::<String>::new());
    let c = load(AppEnv::Production, GOOD_PROD);
    assert_eq!(
        c.server.cors_origins,
        vec!["https://chat.example.com", "https://admin.example.com"]
    );
}

#[test]
fn production_lists_every_missing_value_at_once() {
    let problems = load(AppEnv::Production, &[]).problems();
    for name in ["JWT_SECRET", "REFRESH_TOKEN_SECRET", "AUTH_SECRET"] {
        assert_problem(&problems, &format!("{name} is required"));
    }
}

#[test]
fn short_and_development_secrets_are_refused_in_production() {
    let p = prod_with(&[("JWT_SECRET", "short")]);
    assert_problem(&p, "JWT_SECRET must be at least 32 characters");
    let p = prod_with(&[(
        "REFRESH_TOKEN_SECRET",
        "dev-only-refresh-secret-change-me-012345",
    )]);
    assert_problem(&p, "REFRESH_TOKEN_SECRET is still the development default");
    let p = prod_with(&[
        ("JWT_SECRET", "same-secret-same-secret-same-secret-0"),
        (
            "REFRESH_TOKEN_SECRET",
            "same-secret-same-secret-same-secret-0",
        ),
    ]);
    assert_problem(&p, "must differ");
    // Several problems are reported together.
    let p = prod_with(&[
        ("JWT_SECRET", "short"),
        ("AUTH_SECRET", "tiny"),
        ("REDIS_URL", "not a url"),
    ]);
    assert!(p.len() >= 3, "{p:#?}");
}

#[test]
fn malformed_urls_are_named() {
    assert_problem(
        &prod_with(&[("DATABASE_URL", "mysql://db/x")]),
        "DATABASE_URL must use postgres",
    );
    assert_problem(
        &prod_with(&[("REDIS_URL", "not a url")]),
        "REDIS_URL is not a valid URL",
    );
    assert_problem(
        &prod_with(&[("AMQP_URL", "http://mq")]),
        "AMQP_URL must use amqp",
    );
    assert_problem(
        &prod_with(&[("FRONTEND_URL", "chat.example.com")]),
        "FRONTEND_URL",
    );
    assert_problem(
        &prod_with(&[("CORS_ORIGIN", "https://ok.example.com,ftp://x")]),
        "CORS_ORIGIN",
    );
    assert_problem(
        &prod_with(&[("OPENAI_BASE_URL", "localhost:8000")]),
        "OPENAI_BASE_URL",
    );
    assert_problem(
        &prod_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "::")]),
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    );
}

#[test]
fn unknown_or_unconfigured_providers_are_named() {
    assert_problem(
        &prod_with(&[("LLM_PROVIDER_FREE_TIER", "simulated,gpt-magic")]),
        "unknown provider \"gpt-magic\"",
    );
    assert_problem(
        &prod_with(&[("LLM_PROVIDER_PAID_TIER", "anthropic")]),
        "ANTHROPIC_API_KEY is not set",
    );
    assert_problem(
        &prod_with(&[("LLM_PROVIDER_PAID_TIER", "openai")]),
        "OPENAI_API_KEY",
    );
    assert_problem(
        &prod_with(&[
            ("LLM_PROVIDER_PAID_TIER", "cloudflare"),
            ("CLOUDFLARE_API_TOKEN", "t"),
        ]),
        "CLOUDFLARE_ACCOUNT_ID",
    );
    assert_problem(
        &prod_with(&[("EMBEDDING_PROVIDER", "magic")]),
        "EMBEDDING_PROVIDER",
    );
    assert_problem(
        &prod_with(&[("LLM_PROVIDER_FREE_TIER", " , ")]),
        "must name at least one provider",
    );
    assert_eq!(
        prod_with(&[
            ("LLM_PROVIDER_PAID_TIER", "openai,simulated"),
            ("OPENAI_API_KEY", "sk-test")
        ]),
        Vec::<String>::new()
    );
}

#[test]
fn inconsistent_plans_are_named() {
    let c = load(
        AppEnv::Production,
        &[
            GOOD_PROD,
            &[("SWITCHBOARD_PLANS__FREE__DAILY_BUDGET_MICROS", "5000000")],
        ]
        .concat(),
    );
    assert_problem(
        &c.problems(),
        "plans.free: daily budget (5000000) exceeds monthly budget",
    );
    let c = load(
        AppEnv::Production,
        &[
            GOOD_PROD,
            &[("SWITCHBOARD_PLANS__PRO__MESSAGES_PER_MINUTE", "1")],
        ]
        .concat(),
    );
    assert_problem(&c.problems(), "plans.pro allows less than plans.free");
    let c = load(
        AppEnv::Production,
        &[
            GOOD_PROD,
            &[("SWITCHBOARD_PLANS__TEAM__TOKENS_PER_MINUTE", "0")],
        ]
        .concat(),
    );
    assert_problem(
        &c.problems(),
        "plans.team: per-minute limits must be greater than 0",
    );
}

#[test]
fn stripe_key_needs_a_webhook_secret() {
    assert_problem(
        &prod_with(&[("STRIPE_SECRET_KEY", "sk_live_x")]),
        "STRIPE_WEBHOOK_SECRET is required",
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let c = load(AppEnv::Production, GOOD_PROD);
    let dump = format!("{c:?}");
    for (name, value) in GOOD_PROD {
        if name.contains("SECRET") || name.ends_with("_URL") && value.contains("pw@") {
            assert!(!dump.contains(value), "{name} leaked into Debug output");
        }
    }
    assert!(dump.contains("[redacted]"));
}

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn validate_config_prints_every_problem_and_exits_non_zero() {
    let out = bin()
        .args(["validate-config"])
        .env("APP_ENV", "production")
        .env("JWT_SECRET", "short")
        .env("LLM_PROVIDER_FREE_TIER", "nonsense")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "JWT_SECRET must be at least 32",
        "REFRESH_TOKEN_SECRET is required",
        "unknown provider \"nonsense\"",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    assert!(
        !err.contains("short\""),
        "a secret value was printed:\n{err}"
    );

    let out = bin()
        .args(["validate-config"])
        .env("APP_ENV", "development")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_to_start_in_production_with_problems() {
    let out = bin()
        .args(["serve"])
        .env("APP_ENV", "production")
        .env("JWT_SECRET", "dev-only-jwt-secret-change-me-0123456789")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("JWT_SECRET is still the development default"),
        "{all}"
    );
    assert!(all.contains("REFRESH_TOKEN_SECRET is required"), "{all}");
    assert!(
        !all.contains("dev-only-jwt-secret"),
        "the secret itself was logged:\n{all}"
    );
}

#[test]
fn unknown_app_env_is_an_error() {
    let out = bin()
        .args(["validate-config"])
        .env("APP_ENV", "staging")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("APP_ENV"));
}

#[test]
fn chat_and_socket_settings_are_checked() {
    let c = load(
        AppEnv::Production,
        &[
            GOOD_PROD,
            &[
                ("SWITCHBOARD_SIMULATED__FAILURE_RATE", "1.5"),
                ("SWITCHBOARD_WS__OUTBOUND_QUEUE", "0"),
                ("SWITCHBOARD_WS__PING_INTERVAL_SECS", "90"),
                ("SWITCHBOARD_CHAT__PRICING_FILE", "config/no-such-file.toml"),
            ],
        ]
        .concat(),
    );
    let p = c.problems();
    assert_problem(&p, "simulated.failure_rate must be between 0 and 1");
    assert_problem(&p, "ws.outbound_queue must be greater than 0");
    assert_problem(&p, "ws.ping_interval_secs");
    assert_problem(&p, "no-such-file.toml");
}

#[test]
fn routes_and_default_models_must_be_priced() {
    let c = load(
        AppEnv::Production,
        &[
            GOOD_PROD,
            &[
                ("SWITCHBOARD_PROVIDERS__MODELS__OPENAI", "gpt-unpriced"),
                (
                    "SWITCHBOARD_ROUTES__SMART",
                    "[\"anthropic:claude-nope\", \"nonsense\"]",
                ),
            ],
        ]
        .concat(),
    );
    let p = c.problems();
    assert_problem(&p, "model \"gpt-unpriced\" has no price");
    assert_problem(&p, "model \"claude-nope\" has no price");
    assert_problem(&p, "routes.smart: \"nonsense\" is not provider:model");
}
