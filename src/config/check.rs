//! `validate-config`'s whole report: every setting that cannot be read (one
//! unparseable value does not hide the others), every `SWITCHBOARD_*` variable
//! that names no setting (a misspelling would otherwise be ignored), then the
//! rules of [`Config::problems`].

use std::path::Path;

use figment::{
    Figment,
    providers::{Format, Toml},
};

use super::{AppEnv, Config, ConfigError, ENV_MAP};

/// Most unreadable values reported before giving up.
const MAX_UNREADABLE: usize = 50;

/// `SWITCHBOARD_*` variables whose path is no setting of the files' tree.
pub fn unknown_env_keys(dir: &Path, env: AppEnv, vars: &[(String, String)]) -> Vec<String> {
    let files = Figment::new()
        .merge(Toml::file(dir.join("default.toml")))
        .merge(Toml::file(dir.join(format!("{}.toml", env.as_str()))));
    vars.iter()
        .filter_map(|(key, _)| {
            let rest = key.strip_prefix("SWITCHBOARD_")?;
            if ENV_MAP.iter().any(|(name, _)| name == key) {
                return None;
            }
            let path = rest.to_ascii_lowercase().replace("__", ".");
            files.find_value(&path).is_err().then(|| {
                format!("{key}: names no setting ({path}); misspelt? (see docs/CONFIGURATION.md)")
            })
        })
        .collect()
}

/// Every problem: unreadable values (each variable at fault is set aside and
/// the rest read again), unknown keys as warnings, then the rules.
pub fn report(dir: &Path, env: AppEnv, vars: Vec<(String, String)>) -> (Vec<String>, Vec<String>) {
    let warnings = unknown_env_keys(dir, env, &vars);
    let mut problems = Vec::new();
    let mut vars = vars;
    for _ in 0..MAX_UNREADABLE {
        match Config::load_from(dir, env, vars.clone()) {
            Ok(config) => {
                problems.extend(config.problems());
                return (problems, warnings);
            }
            Err(ConfigError::Env(e)) => {
                problems.push(e);
                break;
            }
            Err(ConfigError::Load(e)) => {
                let path = e.path.join(".");
                problems.push(format!("cannot read settings: {e}"));
                let before = vars.len();
                vars.retain(|(key, _)| env_path(key).as_deref() != Some(path.as_str()));
                if vars.len() == before {
                    // The bad value is in a file: nothing to set aside.
                    break;
                }
            }
        }
    }
    (problems, warnings)
}

/// The setting an environment variable sets, as a dotted path.
fn env_path(key: &str) -> Option<String> {
    if let Some((_, path)) = ENV_MAP.iter().find(|(name, _)| *name == key) {
        return Some((*path).to_owned());
    }
    key.strip_prefix("SWITCHBOARD_")
        .map(|rest| rest.to_ascii_lowercase().replace("__", "."))
}
