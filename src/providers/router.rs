//! The Router: (plan tier, request complexity, requested model) → an ordered
//! list of (provider, model) candidates. Trying them, with retries and
//! fallback, is the generation task's job; this module only decides the order.
//!
//! - A requested model that names a route (`[routes]`) gets that chain.
//! - A requested model with a price gets its own provider first, then the tier's;
//!   if its provider is not running it is refused (a route alias is how an
//!   operator names fallbacks explicitly).
//! - No model: the tier's providers (`LLM_PROVIDER_FREE_TIER` for free,
//!   `LLM_PROVIDER_PAID_TIER` for pro and team), each with its default model,
//!   cheapest first when `routing.prefer_cheapest`; a paid request whose prompt
//!   is over `routing.complex_prompt_tokens` uses the `complex` route if defined.
//!
//! Providers that are not running are left out.

use std::collections::HashMap;

use super::Usage;
use crate::config::pricing::PriceTable;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("model: unknown model {0:?}")]
    UnknownModel(String),
    #[error("no provider is available for this request")]
    NoProvider,
    /// The model (or every model of the route) is served by providers outside the plan's tier.
    #[error("model: {0:?} is not available on this plan")]
    NotInPlan(String),
    /// A priced model whose provider is not configured or not running: named
    /// models are never silently served by another provider.
    #[error("model: {0:?} is served by a provider that is not running here")]
    NotRunning(String),
}

#[derive(Debug, Clone)]
pub struct Router {
    pub routes: HashMap<String, Vec<Candidate>>,
    pub free_tier: Vec<String>,
    pub paid_tier: Vec<String>,
    pub default_models: HashMap<String, String>,
    pub prefer_cheapest: bool,
    pub complex_prompt_tokens: u32,
}

impl Router {
    /// The routes, tiers and default models of the settings.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            routes: config
                .routes
                .iter()
                .map(|(name, chain)| {
                    (
                        name.clone(),
                        chain
                            .iter()
                            .filter_map(|c| Router::parse_candidate(c))
                            .collect(),
                    )
                })
                .collect(),
            free_tier: config.providers.free_tier_list(),
            paid_tier: config.providers.paid_tier_list(),
            default_models: config.providers.models.clone().into_iter().collect(),
            prefer_cheapest: config.routing.prefer_cheapest,
            complex_prompt_tokens: config.routing.complex_prompt_tokens,
        }
    }

    /// Parses `provider:model` entries of a route.
    pub fn parse_candidate(s: &str) -> Option<Candidate> {
        crate::config::route_entry(s).map(|(provider, model)| Candidate {
            provider: provider.to_owned(),
            model: model.to_owned(),
        })
    }

    pub fn candidates(
        &self,
        plan: &str,
        prompt_tokens: u32,
        requested: Option<&str>,
        pricing: &PriceTable,
        running: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Candidate>, RouteError> {
        let tier = if plan == "free" {
            &self.free_tier
        } else {
            &self.paid_tier
        };
        let mut tier_defaults: Vec<Candidate> = tier
            .iter()
            .filter_map(|p| {
                self.default_models.get(p).map(|m| Candidate {
                    provider: p.clone(),
                    model: m.clone(),
                })
            })
            .collect();
        if self.prefer_cheapest {
            // Stable: equal prices keep the operator's order.
            tier_defaults.sort_by_key(|c| unit_price(pricing, &c.model));
        }
        // A plan reaches only its tier's providers, also by naming a model.
        let in_tier = |c: &Candidate| tier.contains(&c.provider);
        let mut out = match requested {
            Some(name) if self.routes.contains_key(name) => {
                let v: Vec<Candidate> = self.routes[name]
                    .iter()
                    .filter(|c| in_tier(c))
                    .cloned()
                    .collect();
                if v.is_empty() {
                    return Err(RouteError::NotInPlan(name.to_owned()));
                }
                v
            }
            Some(model) => {
                let price = pricing
                    .models
                    .get(model)
                    .ok_or_else(|| RouteError::UnknownModel(model.to_owned()))?;
                if !tier.contains(&price.provider) {
                    return Err(RouteError::NotInPlan(model.to_owned()));
                }
                if !running(&price.provider) {
                    return Err(RouteError::NotRunning(model.to_owned()));
                }
                let mut v = vec![Candidate {
                    provider: price.provider.clone(),
                    model: model.to_owned(),
                }];
                v.extend(tier_defaults);
                v
            }
            None if plan != "free"
                && prompt_tokens > self.complex_prompt_tokens
                && self.routes.contains_key("complex") =>
            {
                let mut v: Vec<Candidate> = self.routes["complex"]
                    .iter()
                    .filter(|c| in_tier(c))
                    .cloned()
                    .collect();
                v.extend(tier_defaults);
                v
            }
            None => tier_defaults,
        };
        let mut seen = Vec::new();
        out.retain(|c| {
            let fresh = running(&c.provider) && !seen.contains(c);
            if fresh {
                seen.push(c.clone());
            }
            fresh
        });
        if out.is_empty() {
            return Err(RouteError::NoProvider);
        }
        Ok(out)
    }
}

/// Price of a million input plus a million output tokens; unpriced models sort last.
fn unit_price(pricing: &PriceTable, model: &str) -> u64 {
    pricing
        .models
        .get(model)
        .map_or(u64::MAX, |p| p.input + p.output)
}

/// The most a request can cost on any of the candidates: prompt plus the full output allowance.
pub fn worst_case_micros(
    pricing: &PriceTable,
    candidates: &[Candidate],
    prompt_tokens: u32,
    max_tokens: u32,
) -> i64 {
    let usage = Usage {
        input_tokens: prompt_tokens,
        output_tokens: max_tokens,
    };
    candidates
        .iter()
        .filter_map(|c| pricing.cost_micros(&c.model, usage))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pricing::ModelPrice;

    fn pricing() -> PriceTable {
        let mut t = PriceTable::default();
        for (model, provider, input, output) in [
            ("sim-1", "simulated", 100, 400),
            ("cheap", "openai", 50, 50),
            ("dear", "anthropic", 1000, 5000),
        ] {
            t.models.insert(
                model.into(),
                ModelPrice {
                    provider: provider.into(),
                    input,
                    output,
                    cached_input: None,
                },
            );
        }
        t
    }

    fn router() -> Router {
        Router {
            routes: HashMap::from([(
                "smart".to_owned(),
                vec![
                    Router::parse_candidate("anthropic:dear").unwrap(),
                    Router::parse_candidate("openai:cheap").unwrap(),
                ],
            )]),
            free_tier: vec!["simulated".into()],
            paid_tier: vec!["anthropic".into(), "openai".into(), "simulated".into()],
            default_models: HashMap::from([
                ("simulated".into(), "sim-1".into()),
                ("openai".into(), "cheap".into()),
                ("anthropic".into(), "dear".into()),
            ]),
            prefer_cheapest: true,
            complex_prompt_tokens: 1000,
        }
    }

    fn names(v: &[Candidate]) -> Vec<String> {
        v.iter()
            .map(|c| format!("{}:{}", c.provider, c.model))
            .collect()
    }

    #[test]
    fn tiers_routes_and_models() {
        let r = router();
        let p = pricing();
        let all = |_: &str| true;
        assert_eq!(
            names(&r.candidates("free", 10, None, &p, &all).unwrap()),
            ["simulated:sim-1"]
        );
        // Paid, cheapest first.
        assert_eq!(
            names(&r.candidates("pro", 10, None, &p, &all).unwrap()),
            ["openai:cheap", "simulated:sim-1", "anthropic:dear"]
        );
        assert_eq!(
            names(&r.candidates("pro", 10, Some("smart"), &p, &all).unwrap()),
            ["anthropic:dear", "openai:cheap"]
        );
        // A concrete model first, then the tier, without repeats.
        assert_eq!(
            names(&r.candidates("pro", 10, Some("dear"), &p, &all).unwrap()),
            ["anthropic:dear", "openai:cheap", "simulated:sim-1"]
        );
        assert_eq!(
            r.candidates("pro", 10, Some("nope"), &p, &all),
            Err(RouteError::UnknownModel("nope".into()))
        );
        // Providers that are not running are skipped.
        let no_openai = |p: &str| p != "openai";
        assert_eq!(
            names(
                &r.candidates("pro", 10, Some("smart"), &p, &no_openai)
                    .unwrap()
            ),
            ["anthropic:dear"]
        );
        let none = |_: &str| false;
        assert_eq!(
            r.candidates("free", 10, None, &p, &none),
            Err(RouteError::NoProvider)
        );
    }

    #[test]
    fn complex_prompts_use_the_complex_route_on_paid_plans() {
        let mut r = router();
        r.routes.insert(
            "complex".into(),
            vec![Router::parse_candidate("anthropic:dear").unwrap()],
        );
        let p = pricing();
        let all = |_: &str| true;
        assert_eq!(
            names(&r.candidates("pro", 5000, None, &p, &all).unwrap())[0],
            "anthropic:dear"
        );
        assert_eq!(
            names(&r.candidates("free", 5000, None, &p, &all).unwrap()),
            ["simulated:sim-1"]
        );
        assert_eq!(
            names(&r.candidates("pro", 10, None, &p, &all).unwrap())[0],
            "openai:cheap"
        );
    }

    #[test]
    fn worst_case_is_the_dearest_candidate() {
        let p = pricing();
        let c = vec![
            Router::parse_candidate("openai:cheap").unwrap(),
            Router::parse_candidate("anthropic:dear").unwrap(),
        ];
        // dear: 1000 µ$/M in, 5000 µ$/M out → 1M in + 1M out = 6000.
        assert_eq!(worst_case_micros(&p, &c, 1_000_000, 1_000_000), 6000);
    }
}
