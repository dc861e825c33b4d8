//! One embedding request's life on the same books as a completion: look the
//! inputs up in the embedding cache, count what is left, reserve its price,
//! admit, embed, bill (usage event and settle), cache the new vectors. Every
//! caller (ingestion, retrieval, `/v1/embeddings`) shares the cache this way.

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

/// Vectors in input order, and the tokens billed (cache hits are free).
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u32,
    pub cost_micros: i64,
    /// Inputs answered from the cache.
    pub cached: usize,
}

impl Generations {
    pub async fn embed(
        &self,
        payer: Payer,
        user_id: Option<Uuid>,
        embedder: &dyn Embedder,
        inputs: Vec<String>,
    ) -> Result<Embedded, EmbedError> {
        let model = embedder.model().to_owned();
        let mut slots = self.embed_cache.get_many(&model, &inputs).await;
        let missing: Vec<usize> = (0..inputs.len()).filter(|i| slots[*i].is_none()).collect();
        let cached = inputs.len() - missing.len();
        let workspace_id = payer.workspace_id;
        self.embed_cache
            .record(workspace_id, cached as u64, missing.len() as u64)
            .await;
        let mut out = Embedded {
            vectors: Vec::new(),
            tokens: 0,
            cost_micros: 0,
            cached,
        };
        if !missing.is_empty() {
            let fresh: Vec<String> = missing.iter().map(|i| inputs[*i].clone()).collect();
            let billed = self.embed_uncached(payer, user_id, embedder, fresh).await?;
            let entries: Vec<(&str, &[f32])> = missing
                .iter()
                .zip(&billed.vectors)
                .map(|(i, v)| (inputs[*i].as_str(), v.as_slice()))
                .collect();
            self.embed_cache.put_many(&model, &entries).await;
            for (i, v) in missing.iter().zip(billed.vectors) {
                slots[*i] = Some(v);
            }
            out.tokens = billed.tokens;
            out.cost_micros = billed.cost_micros;
        }
        out.vectors = slots.into_iter().flatten().collect();
        Ok(out)
    }

    /// Reserves, embeds and bills `inputs`, none of them cached.
    async fn embed_uncached(
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
            cost_micros: self
                .pricing
                .cost_micros(embedder.model(), usage)
                .unwrap_or(0),
            cached: 0,
        })
    }
}
