//! The deployment files are checked here, since no Docker engine or
//! Prometheus runs on the test machines: promtool checks and unit-tests the
//! alert rules (scripts/setup.sh installs promtool; a missing promtool fails
//! the test), every metric a dashboard or alert reads is one the server
//! exports, and the compose file parses and wires what docs/OPERATIONS.md says.

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("docker/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is required for this test ({e}): run scripts/setup.sh (make test does)"
            )
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
}

/// Every metric name the server's source mentions as a string literal.
fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_ in ["counter!(", "gauge!(", "histogram!("] {
                    for part in text.split(macro_).skip(1) {
                        if let Some(name) = part
                            .trim_start()
                            .strip_prefix('"')
                            .and_then(|s| s.split('"').next())
                        {
                            names.insert(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    names
}

/// The metric names a PromQL expression reads (`up` is Prometheus's own).
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("switchboard_")
            || word.starts_with("http_")
            || word.starts_with("response_time")
        {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            out.insert(base.to_owned());
        }
    }
    out
}

#[test]
fn dashboards_and_alerts_read_only_exported_metrics() {
    let exported = exported_metrics();
    assert!(
        exported.contains("switchboard_cost_micros_total"),
        "{exported:?}"
    );
    let mut used = BTreeSet::new();
    for name in ["health", "performance", "cost"] {
        let dash: Value =
            serde_json::from_str(&read(&format!("docker/grafana/dashboards/{name}.json"))).unwrap();
        assert_eq!(dash["uid"], format!("switchboard-{name}"));
        let panels = dash["panels"].as_array().unwrap();
        assert!(panels.len() >= 6, "{name}: {} panels", panels.len());
        for p in panels {
            assert_eq!(
                p["datasource"]["uid"], "prometheus",
                "{name}: {}",
                p["title"]
            );
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let m = metrics_in(expr);
                assert!(!m.is_empty() || expr.contains("up{"), "{name}: {expr}");
                used.extend(m);
            }
        }
    }
    let rules: Yaml = serde_yaml_ng::from_str(&read("docker/prometheus/alerts.yml")).unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            used.extend(metrics_in(rule["expr"].as_str().unwrap()));
            let runbook = rule["annotations"]["runbook"].as_str().unwrap();
            let anchor = runbook.split('#').nth(1).unwrap();
            let docs = read("docs/OPERATIONS.md").to_lowercase();
            assert!(
                docs.contains(&format!("### {anchor}")),
                "no runbook section for {anchor}"
            );
        }
    }
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "not exported by the server: {missing:?}"
    );
}

#[test]
fn the_compose_file_wires_the_whole_deployment() {
    let mut compose: Yaml = serde_yaml_ng::from_str(&read("docker/compose.yaml")).unwrap();
    // The app services share one definition through a YAML merge key (`<<: *app`).
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();
    for s in [
        "postgres",
        "redis",
        "rabbitmq",
        "migrate",
        "switchboard",
        "email-worker",
        "prometheus",
        "grafana",
        "jaeger",
    ] {
        assert!(services.contains_key(s), "service {s} missing");
    }
    // Health-gated start: the data services have health checks, and the app
    // waits for them and for the one-off migration.
    for s in ["postgres", "redis", "rabbitmq"] {
        assert!(
            compose["services"][s]["healthcheck"]["test"].is_sequence(),
            "{s} has no healthcheck"
        );
    }
    let deps = &compose["services"]["switchboard"]["depends_on"];
    assert_eq!(
        deps["migrate"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(deps["redis"]["condition"], "service_healthy");
    assert_eq!(deps["rabbitmq"]["condition"], "service_healthy");
    assert_eq!(
        compose["services"]["migrate"]["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    assert_eq!(compose["services"]["email-worker"]["command"][0], "worker");
    // Secrets come from the env file, never from the compose file itself.
    for s in ["migrate", "switchboard", "email-worker"] {
        assert_eq!(compose["services"][s]["env_file"][0], ".env", "{s}");
    }
    let text = read("docker/compose.yaml");
    for line in text
        .lines()
        .filter(|l| l.contains("PASSWORD") && l.contains(':'))
    {
        assert!(
            line.contains("${") || line.trim_start().starts_with('#'),
            "a literal secret? {line}"
        );
    }
    // Every file the services mount exists.
    for (name, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let v = v.as_str().unwrap();
            if let Some(rel) = v.strip_prefix("./") {
                let host = rel.split(':').next().unwrap();
                assert!(root().join("docker").join(host).exists(), "{name:?}: {v}");
            }
        }
    }
    let env_example = read("docker/env.example");
    for var in [
        "POSTGRES_PASSWORD",
        "RABBITMQ_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "JWT_SECRET",
    ] {
        assert!(
            env_example.contains(&format!("{var}=")),
            "{var} missing from docker/env.example"
        );
    }
    let ds: Yaml = serde_yaml_ng::from_str(&read(
        "docker/grafana/provisioning/datasources/prometheus.yaml",
    ))
    .unwrap();
    assert_eq!(ds["datasources"][0]["uid"], "prometheus");
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
    let dp: Yaml = serde_yaml_ng::from_str(&read(
        "docker/grafana/provisioning/dashboards/switchboard.yaml",
    ))
    .unwrap();
    assert_eq!(
        dp["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );

    let dockerfile = read("docker/Dockerfile");
    assert_eq!(
        dockerfile
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count(),
        2,
        "multi-stage"
    );
    assert!(
        dockerfile.contains("\nUSER switchboard\n"),
        "runs as a non-root user"
    );
    assert!(dockerfile.contains("HEALTHCHECK "));
}
