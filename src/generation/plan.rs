//! Planning a generation: route the request, count its prompt, reserve its
//! worst case and admit it against the payer's limits, before anything is
//! stored or any provider is called.

use crate::{
    admission::{AdmitError, Payer},
    budget::Reservation,
    config::pricing::ModelPrice,
    providers::{
        ChatRequest, PromptMessage,
        router::{Candidate, RouteError, worst_case_micros},
        tokenizer, unsupported_param,
    },
};

/// What tool definitions and tool calls add to a prompt, as text to count.
fn tools_text(request: &ChatRequest) -> String {
    let mut text = String::new();
    for t in &request.options.tools {
        text.push_str(&t.to_openai().to_string());
    }
    for m in &request.messages {
        for c in &m.tool_calls {
            text.push_str(&c.name);
            text.push_str(&c.arguments);
        }
    }
    text
}

use super::Generations;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Admit(#[from] AdmitError),
    #[error(
        "the server is shutting down: send again (another node, or this one once restarted, answers)"
    )]
    ShuttingDown,
    /// The provider that would answer cannot honour a parameter of the request.
    #[error("{param}: not supported by provider {provider}")]
    Unsupported {
        param: &'static str,
        provider: String,
    },
}

/// An admitted generation that has not started: it holds a budget
/// reservation, which is released if it is dropped unstarted.
pub struct Planned {
    gens: Generations,
    pub payer: Payer,
    /// The router's candidates, in the order they will be tried.
    pub candidates: Vec<Candidate>,
    /// The prompt as counted by the tokenizer (what is billed when a provider reports no usage).
    pub prompt_tokens: u32,
    pub max_tokens: u32,
    /// What was reserved: the prompt plus `max_tokens` at the dearest candidate's price.
    pub worst_micros: i64,
    reservation: Option<Reservation>,
}

impl Generations {
    /// Routes, counts and admits one generation for `payer`.
    pub async fn plan(
        &self,
        payer: Payer,
        prompt: &[PromptMessage],
        requested_model: Option<&str>,
        max_tokens: u32,
    ) -> Result<Planned, PlanError> {
        let prompt_tokens = tokenizer::count_prompt(prompt);
        self.admit_route(payer, prompt_tokens, requested_model, max_tokens, |_| None)
            .await
    }

    /// Routes (leaving out candidates `refuses` names a parameter for; the
    /// first one refusing refuses the request), then admits the worst case.
    async fn admit_route(
        &self,
        payer: Payer,
        prompt_tokens: u32,
        requested_model: Option<&str>,
        max_tokens: u32,
        refuses: impl Fn(&Candidate) -> Option<&'static str>,
    ) -> Result<Planned, PlanError> {
        if self.draining.is_cancelled() {
            return Err(PlanError::ShuttingDown);
        }
        let providers = &self.providers;
        let mut candidates = self.router.candidates(
            &payer.plan,
            prompt_tokens,
            requested_model,
            &self.pricing,
            &|p| providers.contains(p),
        )?;
        if let Some(param) = candidates.first().and_then(&refuses) {
            return Err(PlanError::Unsupported {
                param,
                provider: candidates[0].provider.clone(),
            });
        }
        candidates.retain(|c| refuses(c).is_none());
        let worst_micros = worst_case_micros(&self.pricing, &candidates, prompt_tokens, max_tokens);
        let reservation = self.admission.admit(&payer, worst_micros).await?;
        Ok(Planned::admitted(
            self.clone(),
            payer,
            candidates,
            (prompt_tokens, max_tokens),
            worst_micros,
            reservation,
        ))
    }

    /// [`Generations::plan`] for a request that may carry tools, structured
    /// output or sampling options: a candidate whose provider cannot honour
    /// one of them is left out, so a fallback never drops a parameter
    /// silently; when the first one cannot, the request is refused naming it.
    pub async fn plan_request(
        &self,
        payer: Payer,
        request: &ChatRequest,
        requested_model: Option<&str>,
    ) -> Result<Planned, PlanError> {
        let prompt_tokens = tokenizer::count_prompt(&request.messages)
            .saturating_add(tokenizer::count_tokens(&tools_text(request)));
        let providers = &self.providers;
        let refuses = |c: &Candidate| {
            providers
                .provider(&c.provider)
                .and_then(|p| unsupported_param(&*p, request))
        };
        self.admit_route(
            payer,
            prompt_tokens,
            requested_model,
            request.max_tokens,
            refuses,
        )
        .await
    }

    /// What a plan may ask for by name, by the same rule as [`Generations::plan`]:
    /// the route aliases and priced models it can reach, each sorted by name.
    pub fn offer(&self, plan: &str) -> Offer<'_> {
        let providers = &self.providers;
        let reachable = |name: &str| {
            self.router
                .candidates(plan, 0, Some(name), &self.pricing, &|p| {
                    providers.contains(p)
                })
                .is_ok()
        };
        let mut routes: Vec<&str> = self
            .router
            .routes
            .keys()
            .map(String::as_str)
            .filter(|r| reachable(r))
            .collect();
        routes.sort_unstable();
        let mut models: Vec<(&str, &ModelPrice)> = self
            .pricing
            .models
            .iter()
            .map(|(id, p)| (id.as_str(), p))
            .filter(|(id, _)| reachable(id))
            .collect();
        models.sort_unstable_by_key(|(id, _)| *id);
        Offer { routes, models }
    }
}

/// Route aliases and models a plan can reach.
pub struct Offer<'a> {
    pub routes: Vec<&'a str>,
    pub models: Vec<(&'a str, &'a ModelPrice)>,
}

impl Planned {
    /// A generation admitted by other means (an embedding request).
    pub(super) fn admitted(
        gens: Generations,
        payer: Payer,
        candidates: Vec<Candidate>,
        (prompt_tokens, max_tokens): (u32, u32),
        worst_micros: i64,
        reservation: Reservation,
    ) -> Self {
        Self {
            gens,
            payer,
            candidates,
            prompt_tokens,
            max_tokens,
            worst_micros,
            reservation: Some(reservation),
        }
    }

    /// The first candidate: who is expected to answer.
    pub fn first(&self) -> &Candidate {
        &self.candidates[0]
    }

    pub(super) fn take_reservation(&mut self) -> Option<Reservation> {
        self.reservation.take()
    }
}

impl Drop for Planned {
    /// Never started (the message was a duplicate, storage failed, the chat
    /// went away): nothing was produced, so the reservation settles at zero.
    fn drop(&mut self) {
        let Some(res) = self.reservation.take() else {
            return;
        };
        let (admission, payer) = (self.gens.admission.clone(), self.payer.clone());
        if tokio::runtime::Handle::try_current().is_ok() {
            self.gens
                .tasks
                .spawn(async move { admission.settle(&payer, res, 0, 0).await });
        }
    }
}
