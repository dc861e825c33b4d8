//! Running one planned generation: open a provider, stream to the sink, bill.
//! Once a token has gone out nothing switches provider: a failure ends the
//! answer as failed. Tokens already waiting are delivered together, so a fast
//! provider costs fewer frames downstream.

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{
    BillTo, GenEvent, Generations, Planned, Sink, Status,
    attempt::{OpenError, Opened, log_served, open_first},
    billing::Bill,
};
use crate::providers::{ChatRequest, EventStream, ProviderError, StreamEvent, tokenizer};

/// Most tokens delivered in one event.
const COALESCE: usize = 64;

/// How the stream ended: status, finish reason, error.
type End = (Status, String, Option<ProviderError>);

pub(super) async fn run(
    gens: Generations,
    mut planned: Planned,
    request: ChatRequest,
    to: BillTo,
    cancel: CancellationToken,
    mut sink: impl Sink,
) {
    let attempts = gens.attempts(&planned);
    let max_tokens = planned.max_tokens;
    let mut bill = Bill::open(gens.clone(), &mut planned, to);
    drop(planned);
    let opened = match open_first(&gens.providers, &attempts, &request, &cancel).await {
        Ok(o) => o,
        Err(e) => {
            let ending = match e {
                OpenError::Cancelled => {
                    bill.close(None, Status::Cancelled, "cancelled", None).await
                }
                OpenError::Failed(last, _) => {
                    bill.close(None, Status::Failed, "error", Some(last)).await
                }
            };
            sink.deliver(GenEvent::Ended(ending)).await;
            return;
        }
    };
    log_served(&opened);
    let Opened {
        candidate,
        lease,
        mut stream,
        first,
        fell_back_from,
    } = opened;
    bill.provider.clone_from(&candidate.provider);
    bill.model.clone_from(&candidate.model);
    bill.fell_back = !fell_back_from.is_empty();
    let started = GenEvent::Started {
        provider: candidate.provider,
        model: candidate.model,
        fell_back: bill.fell_back,
    };
    let listening = sink.deliver(started).await;
    let (status, reason, error) = if listening {
        relay(
            &mut sink,
            &mut stream,
            first,
            &cancel,
            &mut bill,
            max_tokens,
            gens.routing.inter_token_timeout_ms,
        )
        .await
    } else {
        (Status::Cancelled, "cancelled".into(), None)
    };
    // Closing the upstream request before billing: nothing more can arrive.
    drop(stream);
    let ending = bill.close(Some(&lease), status, &reason, error).await;
    drop(lease);
    // Delivered even to a sink that stopped listening: the chat's sink still
    // has to store the answer's final state.
    sink.deliver(GenEvent::Ended(ending)).await;
}

/// Streams tokens to the sink until the provider ends, fails (or is silent
/// for `silence_ms` between tokens), is cut at
/// `max_tokens`, or the generation is cancelled (by its owner or because the
/// sink stopped listening).
#[expect(
    clippy::too_many_lines,
    reason = "the relay loop: one select over stream, cancel and silence"
)]
async fn relay(
    sink: &mut impl Sink,
    stream: &mut EventStream,
    first: StreamEvent,
    cancel: &CancellationToken,
    bill: &mut Bill,
    max_tokens: u32,
    silence_ms: u64,
) -> End {
    let mut listening = true;
    let mut pending = Some(Some(Ok(first)));
    let silence = std::time::Duration::from_millis(silence_ms);
    loop {
        if !listening {
            break (Status::Cancelled, "cancelled".into(), None);
        }
        let head = match pending.take() {
            Some(ev) => ev,
            None => tokio::select! {
                biased;
                () = cancel.cancelled() => break (Status::Cancelled, "cancelled".into(), None),
                ev = tokio::time::timeout(silence, stream.next()) => match ev {
                    Ok(ev) => ev,
                    // Tokens have reached the client: no fallback, the answer
                    // ends with the explicit mid-stream error.
                    Err(_) => Some(Err(ProviderError::Stalled(silence_ms))),
                },
            },
        };
        let mut ready = vec![head];
        // hyper hands a response body over one chunk at a time: chunks that
        // came in one read reach this stream only as the connection's task
        // runs again. So before sending, yield to the scheduler, and again
        // after every yield that brought more: a backlog goes out in one
        // write instead of one per chunk.
        let mut may_yield = true;
        while ready.len() < COALESCE
            && matches!(
                ready.last(),
                Some(Some(Ok(StreamEvent::Token(_) | StreamEvent::ToolCall(_))))
            )
        {
            match stream.next().now_or_never() {
                Some(ev) => {
                    ready.push(ev);
                    may_yield = true;
                }
                None if may_yield => {
                    may_yield = false;
                    tokio::task::yield_now().await;
                }
                None => break,
            }
        }
        let mut tokens = Vec::new();
        let mut calls = Vec::new();
        let mut end: Option<End> = None;
        for ev in ready {
            match ev {
                Some(Ok(StreamEvent::ToolCall(d))) => {
                    // Tool-call text is output like any other, billed and capped the same.
                    let n = tokenizer::count_tokens(&d.arguments)
                        + d.name.as_deref().map_or(0, tokenizer::count_tokens);
                    if bill.produced + tokens.len() as u32 + n > max_tokens {
                        end = Some((Status::Complete, "length".into(), None));
                        break;
                    }
                    bill.produced += n;
                    calls.push(d);
                }
                Some(Ok(StreamEvent::Token(t))) => {
                    // A provider that ignores max_tokens is cut off here: the
                    // reservation covered max_tokens, not what it chose to send.
                    if bill.produced + tokens.len() as u32 >= max_tokens {
                        end = Some((Status::Complete, "length".into(), None));
                        break;
                    }
                    tokens.push(t);
                }
                Some(Ok(StreamEvent::Usage(u))) => bill.reported = Some(u),
                Some(Ok(StreamEvent::Finish(r))) => {
                    end = Some((Status::Complete, r, None));
                    break;
                }
                Some(Err(e)) => {
                    end = Some((Status::Failed, "error".into(), Some(e)));
                    break;
                }
                None => {
                    let e = ProviderError::Disconnected;
                    end = Some((Status::Failed, "error".into(), Some(e)));
                    break;
                }
            }
        }
        if !tokens.is_empty() {
            let n = tokens.len() as u32;
            bill.produced += n;
            metrics::counter!("switchboard_tokens_streamed_total").increment(u64::from(n));
            listening = sink.deliver(GenEvent::Tokens(tokens)).await;
        }
        if !calls.is_empty() && listening {
            listening = sink.deliver(GenEvent::ToolCalls(calls)).await;
        }
        if let Some(end) = end {
            break end;
        }
    }
}
