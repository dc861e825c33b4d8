//! Stripe prices ↔ Switchboard plans, and the catalogue of what can be bought
//! with each plan's limits and budgets (from `[plans.*]`).

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;
use crate::config::PriceConfig;

/// The configured prices, looked up by Stripe price id.
#[derive(Debug, Clone, Default)]
pub struct Prices(Vec<PriceConfig>);

impl Prices {
    pub fn new(prices: Vec<PriceConfig>) -> Self {
        Self(prices)
    }
    pub fn get(&self, price_id: &str) -> Option<&PriceConfig> {
        self.0.iter().find(|p| p.id == price_id)
    }
    /// The plan a price buys.
    pub fn plan_of(&self, price_id: &str) -> Option<&str> {
        self.get(price_id).map(|p| p.plan.as_str())
    }
    pub fn all(&self) -> &[PriceConfig] {
        &self.0
    }
}

/// The limits and budgets a plan gives (money in micro-dollars).
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanLimits {
    pub messages_per_minute: u32,
    pub tokens_per_minute: u32,
    pub daily_budget_micros: i64,
    pub monthly_budget_micros: i64,
    pub user_daily_budget_micros: i64,
    pub user_monthly_budget_micros: i64,
}

/// One plan, and the prices that buy it (none for `free`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanOffer {
    pub plan: String,
    pub limits: PlanLimits,
    pub prices: Vec<PriceOffer>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceOffer {
    /// The `priceId` to send to `create-checkout-session`.
    pub price_id: String,
    /// Billed per member; checkout takes `seats`.
    pub per_seat: bool,
}

/// Every configured plan, free first, with its prices.
pub fn catalogue(config: &Config, prices: &Prices) -> Vec<PlanOffer> {
    let order = |name: &str| match name {
        "free" => 0,
        "pro" => 1,
        "team" => 2,
        _ => 3,
    };
    let mut plans: Vec<PlanOffer> = config
        .plans
        .iter()
        .map(|(name, p)| PlanOffer {
            plan: name.clone(),
            limits: PlanLimits {
                messages_per_minute: p.messages_per_minute,
                tokens_per_minute: p.tokens_per_minute,
                daily_budget_micros: p.daily_budget_micros,
                monthly_budget_micros: p.monthly_budget_micros,
                user_daily_budget_micros: p.user_daily(),
                user_monthly_budget_micros: p.user_monthly(),
            },
            prices: prices
                .all()
                .iter()
                .filter(|pr| &pr.plan == name)
                .map(|pr| PriceOffer {
                    price_id: pr.id.clone(),
                    per_seat: pr.per_seat,
                })
                .collect(),
        })
        .collect();
    plans.sort_by_key(|p| (order(&p.plan), p.plan.clone()));
    plans
}
