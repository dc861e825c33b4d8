//! The edges a client developer meets first: `.env` read at start (the
//! environment winning), `validate-config` reporting past an unreadable value
//! and warning about misspelt `SWITCHBOARD_*` keys, and `/metrics` with
//! `# HELP` for every series and the documented series present from start.

use std::{path::Path, process::Command};

use crate::helpers::spawn_app;

fn bin(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn validate_config_reports_past_an_unreadable_value_and_warns_of_unknown_keys() {
    let out = bin(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(["validate-config"])
        .env("APP_ENV", "production")
        .env("JWT_SECRET", "short")
        .env("SWITCHBOARD_PLANS__FREE__MESSAGES_PER_MINUTE", "lots")
        .env("SWITCHBOARD_ROUTING__MAX_RETRYS", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "messages_per_minute",
        "lots",
        // the other problems are still there
        "JWT_SECRET must be at least 32",
        "REFRESH_TOKEN_SECRET is required",
        "warning: SWITCHBOARD_ROUTING__MAX_RETRYS: names no setting",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    // A correct key is not warned about.
    let out = bin(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(["validate-config"])
        .env("APP_ENV", "development")
        .env("SWITCHBOARD_ROUTING__MAX_RETRIES", "3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn dotenv_is_read_at_start_and_the_environment_wins() {
    let dir = std::env::temp_dir().join(format!("sb-dotenv-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        dir.join("config"),
    )
    .unwrap();
    std::fs::write(
        dir.join(".env"),
        "APP_ENV=development\nLLM_PROVIDER_FREE_TIER=fromdotenv\nLLM_PROVIDER_PAID_TIER=dotenvonly\n",
    )
    .unwrap();
    let out = bin(&dir)
        .args(["validate-config"])
        .env("LLM_PROVIDER_FREE_TIER", "fromenv")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown provider \"dotenvonly\""), "{err}");
    assert!(err.contains("unknown provider \"fromenv\""), "{err}");
    assert!(!err.contains("fromdotenv"), "the environment wins: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn metrics_have_help_text_and_the_documented_series_exist_from_start() {
    let app = spawn_app().await;
    let text = app.metrics_text().await;
    for series in [
        "switchboard_tokens_streamed_total",
        "switchboard_usage_events_written_total",
        "switchboard_embedding_cache_hits_total",
        "switchboard_redis_degraded",
        "switchboard_ws_connections",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{series} "))),
            "{series} is not exported from start"
        );
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no # HELP for {name}"
        );
    }
    // Prometheus's own checker, as operators run it.
    let mut check = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs it)");
    use tokio::io::AsyncWriteExt;
    let mut stdin = check.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = check.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
