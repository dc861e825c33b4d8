//! The `[billing]` settings: which Stripe prices buy which plan, where the
//! Stripe API is, the webhook's tolerance and older secrets, the grace period.
//! `[stripe]` (in `config.rs`) keeps the API key and the current webhook secret.

use serde::Deserialize;

use super::{Config, MIN_SECRET_LEN, Secret};

/// Plans that can be bought; `free` is what a workspace has without one.
pub const PAID_PLANS: &[&str] = &["pro", "team"];

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BillingConfig {
    /// Base URL of the Stripe API (`STRIPE_API_BASE`); tests point it at a fake.
    pub api_base: String,
    /// Prices that can be bought, each mapped to a plan.
    pub prices: Vec<PriceConfig>,
    /// Shorthands for `prices` from the environment (`STRIPE_PRICE_PRO`, `STRIPE_PRICE_TEAM`, per seat).
    pub price_pro: Option<String>,
    pub price_team: Option<String>,
    /// Webhook secrets still accepted besides `stripe.webhook_secret`, while one
    /// is rolled (`STRIPE_WEBHOOK_SECRETS_PREVIOUS`, comma-separated).
    #[serde(deserialize_with = "secrets_list_or_csv")]
    pub previous_webhook_secrets: Vec<Secret>,
    /// A webhook whose signed timestamp is further than this from our clock is refused.
    pub webhook_tolerance_secs: i64,
    /// How long a subscription whose payment failed keeps its plan.
    pub grace_period_secs: u64,
    /// How often each node looks for workspaces whose grace period ran out.
    pub sweep_interval_secs: u64,
    /// Where Checkout sends the buyer back; `{frontend_url}/billing?…` when unset.
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    /// Where the customer portal's "return" link goes; `{frontend_url}/billing` when unset.
    pub portal_return_url: Option<String>,
    /// Timeout of one call to the Stripe API.
    pub api_timeout_secs: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com".into(),
            prices: Vec::new(),
            price_pro: None,
            price_team: None,
            previous_webhook_secrets: Vec::new(),
            webhook_tolerance_secs: 300,
            grace_period_secs: 3 * 24 * 3600,
            sweep_interval_secs: 300,
            success_url: None,
            cancel_url: None,
            portal_return_url: None,
            api_timeout_secs: 20,
        }
    }
}

/// One Stripe price and the plan it buys.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PriceConfig {
    /// Stripe's price id (`price_…`).
    pub id: String,
    /// `pro` or `team`.
    pub plan: String,
    /// Billed per member: checkout asks for a quantity (seats).
    #[serde(default)]
    pub per_seat: bool,
}

impl BillingConfig {
    /// `prices` with the environment shorthands added.
    pub fn all_prices(&self) -> Vec<PriceConfig> {
        let mut out = self.prices.clone();
        for (id, plan, per_seat) in [
            (&self.price_pro, "pro", false),
            (&self.price_team, "team", true),
        ] {
            if let Some(id) = id.as_deref().map(str::trim).filter(|s| !s.is_empty())
                && !out.iter().any(|p| p.id == id)
            {
                out.push(PriceConfig {
                    id: id.to_owned(),
                    plan: plan.to_owned(),
                    per_seat,
                });
            }
        }
        out
    }
}

/// Every problem with the billing settings (appended to `Config::problems`).
pub(super) fn problems(config: &Config) -> Vec<String> {
    let b = &config.billing;
    let mut p = Vec::new();
    let prices = b.all_prices();
    for (i, price) in prices.iter().enumerate() {
        if price.id.trim().is_empty() || price.id.len() > 255 {
            p.push(format!(
                "billing.prices[{i}]: id must be 1 to 255 characters"
            ));
        }
        if !PAID_PLANS.contains(&price.plan.as_str()) {
            p.push(format!(
                "billing.prices[{i}] ({}): plan must be one of {} (got {:?})",
                price.id,
                PAID_PLANS.join(", "),
                price.plan
            ));
        } else if config.plan(&price.plan).is_none() {
            p.push(format!(
                "billing.prices[{i}] ({}): plans.{} is not configured",
                price.id, price.plan
            ));
        }
        if prices[..i].iter().any(|q| q.id == price.id) {
            p.push(format!("billing.prices: {} is listed twice", price.id));
        }
    }
    if config.stripe.secret_key.is_some() && prices.is_empty() {
        p.push(
            "STRIPE_SECRET_KEY is set but no price is mapped to a plan (billing.prices, STRIPE_PRICE_PRO, STRIPE_PRICE_TEAM)"
                .into(),
        );
    }
    match url::Url::parse(&b.api_base) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        _ => p.push(format!(
            "STRIPE_API_BASE must be an http(s) URL (got {:?})",
            b.api_base
        )),
    }
    for (name, url) in [
        ("billing.success_url", &b.success_url),
        ("billing.cancel_url", &b.cancel_url),
        ("billing.portal_return_url", &b.portal_return_url),
    ] {
        if let Some(url) = url
            && url::Url::parse(url).is_err()
        {
            p.push(format!("{name} is not a valid URL"));
        }
    }
    for s in &b.previous_webhook_secrets {
        if s.expose().chars().count() < MIN_SECRET_LEN {
            p.push(format!(
                "STRIPE_WEBHOOK_SECRETS_PREVIOUS: each secret must be at least {MIN_SECRET_LEN} characters"
            ));
        }
    }
    if !(1..=3600).contains(&b.webhook_tolerance_secs) {
        p.push("billing.webhook_tolerance_secs must be 1 to 3600".into());
    }
    if b.sweep_interval_secs == 0 || b.api_timeout_secs == 0 {
        p.push(
            "billing.sweep_interval_secs and billing.api_timeout_secs must be greater than 0"
                .into(),
        );
    }
    p
}

/// Accepts `["a","b"]` from TOML or `"a,b"` from an environment variable.
fn secrets_list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<Secret>),
        Csv(Secret),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => s
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::AppEnv;

    fn config() -> Config {
        Config::load_from(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            AppEnv::Test,
            [
                ("STRIPE_PRICE_PRO".to_owned(), "price_env_pro".to_owned()),
                (
                    "STRIPE_WEBHOOK_SECRETS_PREVIOUS".to_owned(),
                    "whsec_old_one_0123456789abcdefghijklmnopq, whsec_old_two_0123456789abcdefghijklmnopq".to_owned(),
                ),
            ],
        )
        .expect("config loads")
    }

    #[test]
    fn environment_shorthands_and_secret_lists_load() {
        let c = config();
        assert_eq!(c.billing.previous_webhook_secrets.len(), 2);
        let prices = c.billing.all_prices();
        assert_eq!(prices.len(), 1);
        assert_eq!(
            (prices[0].id.as_str(), prices[0].plan.as_str()),
            ("price_env_pro", "pro")
        );
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    }

    #[test]
    fn every_problem_is_listed() {
        let mut c = config();
        c.stripe.secret_key = Some(Secret::new("sk_test_x"));
        c.billing.price_pro = None;
        assert!(
            problems(&c)
                .iter()
                .any(|p| p.contains("no price is mapped"))
        );
        c.billing.prices = vec![
            PriceConfig {
                id: "price_a".into(),
                plan: "free".into(),
                per_seat: false,
            },
            PriceConfig {
                id: "price_a".into(),
                plan: "pro".into(),
                per_seat: false,
            },
        ];
        c.billing.api_base = "ftp://stripe".into();
        c.billing.webhook_tolerance_secs = 0;
        c.billing.previous_webhook_secrets = vec![Secret::new("short")];
        let p = problems(&c);
        for needle in [
            "plan must be one of",
            "listed twice",
            "STRIPE_API_BASE",
            "webhook_tolerance_secs",
            "STRIPE_WEBHOOK_SECRETS_PREVIOUS",
        ] {
            assert!(
                p.iter().any(|x| x.contains(needle)),
                "{needle} not in {p:?}"
            );
        }
        assert!(
            !p.iter().any(|x| x.contains("short")),
            "a secret never appears in a problem"
        );
    }
}
