//! One embedding request's life on the same books as a completion: count the
//! input, reserve its price, admit, embed, bill (usage event and settle).

use uuid::Uuid;

use super::{
    Generations, PlanError, Planned, Status,
    billing::{Bill, BillTo},
};
use crate::{
    admission::Payer,
    providers::{ProviderError, Usage, embedding::Embedder, router::Candidate, tokenizer},
};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Vectors in input order, and the tokens billed.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u32,
}

impl Generations {
    pub async fn embed(
        &self,
        payer: Payer,
        user_id: Option<Uuid>,
        embedder: &dyn Embedder,
        inputs: Vec<String>,
    ) -> Result<Embedded, EmbedError> {
        let tokens: u32 = inputs.iter().map(|s| tokenizer::count_tokens(s)).sum();
        let usage = Usage {
            input_tokens: tokens,
            output_tokens: 0,
        };
        let worst_micros = self
            .pricing
            .cost_micros(embedder.model(), usage)
            .unwrap_or(0);
        let reservation = self
            .admission
            .admit(&payer, worst_micros)
            .await
            .map_err(PlanError::from)?;
        let mut planned = Planned::admitted(
            self.clone(),
            payer,
            vec![Candidate {
                provider: embedder.name().to_owned(),
                model: embedder.model().to_owned(),
            }],
            (tokens, 0),
            worst_micros,
            reservation,
        );
        let to = BillTo {
            user_id,
            ..BillTo::default()
        };
        let mut bill = Bill::open(self.clone(), &mut planned, to);
        let result = embedder.embed(inputs).await;
        let status = if result.is_ok() {
            bill.reported = Some(usage);
            Status::Complete
        } else {
            Status::Failed
        };
        bill.close(None, status, "stop", None).await;
        Ok(Embedded {
            vectors: result?,
            tokens,
        })
    }
}
