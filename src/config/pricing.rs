//! The price table (`config/pricing.toml`): integer micro-dollars per million
//! tokens, so every cost is exact and reproducible. No floating point.
//! Part of the configuration: loaded and checked with it, used by the router
//! and the generation lifecycle.

use std::{collections::HashMap, path::Path};

use serde::{Deserialize, Serialize};

/// Tokens in and out of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelPrice {
    pub provider: String,
    /// Micro-dollars per million input tokens.
    pub input: u64,
    /// Micro-dollars per million output tokens.
    pub output: u64,
    /// Micro-dollars per million cached input tokens, where the provider has them.
    pub cached_input: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PriceTable {
    pub models: HashMap<String, ModelPrice>,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
}

impl PriceTable {
    pub fn load(path: &Path) -> Result<Self, PricingError> {
        let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| PricingError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Cost in micro-dollars, rounded up per direction so we never under-bill;
    /// `None` for a model without a price.
    pub fn cost_micros(&self, model: &str, usage: Usage) -> Option<i64> {
        let p = self.models.get(model)?;
        let part =
            |tokens: u32, per_million: u64| (u64::from(tokens) * per_million).div_ceil(1_000_000);
        i64::try_from(part(usage.input_tokens, p.input) + part(usage.output_tokens, p.output)).ok()
    }
}

/// Micro-dollars as a decimal dollar string (`1234` → `"0.001234"`), exact.
pub fn micros_to_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact_integers_rounded_up() {
        let mut t = PriceTable::default();
        t.models.insert(
            "m".into(),
            ModelPrice {
                provider: "x".into(),
                input: 100_000,
                output: 400_000,
                cached_input: None,
            },
        );
        assert_eq!(
            t.cost_micros(
                "m",
                Usage {
                    input_tokens: 1_000_000,
                    output_tokens: 0
                }
            ),
            Some(100_000)
        );
        assert_eq!(
            t.cost_micros(
                "m",
                Usage {
                    input_tokens: 10,
                    output_tokens: 10
                }
            ),
            Some(1 + 4)
        );
        assert_eq!(
            t.cost_micros(
                "m",
                Usage {
                    input_tokens: 0,
                    output_tokens: 0
                }
            ),
            Some(0)
        );
        assert_eq!(t.cost_micros("unknown", Usage::default()), None);
    }

    #[test]
    fn usd_strings() {
        assert_eq!(micros_to_usd(1234), "0.001234");
        assert_eq!(micros_to_usd(12_000_000), "12.000000");
        assert_eq!(micros_to_usd(0), "0.000000");
    }
}
