//! From a request's text to its prompt tokens: sized up before any work
//! (a text cannot be fewer tokens than its bytes ÷ the longest token), then
//! rendered and tokenized on the blocking pool — a few at a time — so the
//! HTTP workers keep answering everyone else, and with the `truncate`
//! overflow policy the turns to drop are found by a binary search (a few
//! renderings, not one per dropped turn).

use std::sync::Arc;

use hearth_core::TokenId;
use hearth_engine::batching::SeqLimits;
use hearth_engine::{Constraint, EngineError, Guide, LoadedModel};
use hearth_text::{ChatExtras, Message};

use crate::dto::{OverflowPolicy, PromptPiece};
use crate::error::ApiError;
use crate::Served;

/// Tokens of a text-completion prompt (control-token texts count: the
/// client writes the whole prompt).
pub async fn text(state: &Served, text: String) -> Result<Vec<TokenId>, ApiError> {
    check_bytes(state, text.len(), "prompt")?;
    let tokens = off_worker(state, move |s| s.raw_prompt(&text)).await??;
    check_tokens(state.engine.limits(), tokens.len(), "prompt")?;
    Ok(tokens)
}

/// Tokens of a prompt given as text and token pieces (llama-server's mixed
/// prompts): text is tokenized, with BOS where the model wants one only when
/// the prompt starts with text; ids are checked against the vocabulary.
pub async fn pieces(state: &Served, pieces: Vec<PromptPiece>) -> Result<Vec<TokenId>, ApiError> {
    if let [PromptPiece::Text(t)] = pieces.as_slice() {
        return text(state, t.clone()).await;
    }
    let bytes = pieces.iter().map(|p| if let PromptPiece::Text(t) = p { t.len() } else { 0 }).sum();
    check_bytes(state, bytes, "prompt")?;
    let vocab = state.engine.session().tokenizer.vocab_size();
    if let Some(bad) = pieces.iter().find_map(|p| match p {
        PromptPiece::Token(t) if *t as usize >= vocab => Some(*t),
        _ => None,
    }) {
        return Err(ApiError::invalid("prompt", format!("token {bad} is outside the vocabulary of {vocab} tokens")));
    }
    let tokens = off_worker(state, move |s| -> Result<Vec<TokenId>, EngineError> {
        let mut out = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            match p {
                PromptPiece::Text(t) => out.extend(s.tokenizer.encode(t, i == 0)?),
                PromptPiece::Token(t) => out.push(*t),
            }
        }
        Ok(out)
    })
    .await??;
    check_tokens(state.engine.limits(), tokens.len(), "prompt")?;
    Ok(tokens)
}

/// Tokens of `text` for `/tokenize`: sized and prepared like a prompt, but
/// not held to the context (only to the bytes a sequence could ever hold).
pub async fn tokenize(state: &Served, text: String, add_bos: bool) -> Result<Vec<TokenId>, ApiError> {
    check_bytes(state, text.len(), "content")?;
    Ok(off_worker(state, move |s| s.tokenizer.encode(&text, add_bos)).await?.map_err(EngineError::from)?)
}

/// How many tokens `text` is for the model (plain text, no template):
/// what the triage router's length rule reads.
pub async fn count(state: &Served, text: String) -> Result<usize, ApiError> {
    if text.len() > byte_bound(state) {
        // More than any sequence holds: its least count says as much.
        return Ok(text.len() / state.engine.session().tokenizer.max_token_bytes());
    }
    Ok(off_worker(state, move |s| s.tokenizer.encode(&text, false).map(|t| t.len())).await?.map_err(EngineError::from)?)
}

/// Tokens of a chat. With `Truncate`, the oldest turns (after the system
/// messages, never the last message) are dropped until it fits.
pub async fn chat(
    state: &Served,
    messages: Vec<Message>,
    extras: ChatExtras,
    policy: OverflowPolicy,
) -> Result<Vec<TokenId>, ApiError> {
    let limits = state.engine.limits();
    let bound = byte_bound(state);
    let total: usize = messages.iter().map(|m| m.content.len()).sum();
    if policy == OverflowPolicy::Error {
        check_bytes(state, total, "messages")?;
        let tokens = off_worker(state, move |s| s.chat_prompt_with(&messages, &extras)).await??;
        check_tokens(limits, tokens.len(), "messages")?;
        return Ok(tokens);
    }
    let droppable: Vec<usize> =
        (0..messages.len().saturating_sub(1)).filter(|&i| messages[i].role != "system").collect();
    // Turns that must go by their bytes alone, before anything is rendered.
    let (mut must_drop, mut kept) = (0, total);
    while kept > bound && must_drop < droppable.len() {
        kept -= messages[droppable[must_drop]].content.len();
        must_drop += 1;
    }
    check_bytes(state, kept, "messages")?;
    off_worker(state, move |s| fit_by_dropping(s, &messages, &extras, &droppable, must_drop, limits)).await?
}

/// The fewest oldest droppable turns (at least `from`) whose removal makes
/// the chat fit, by binary search: fitting only gets easier as more go.
fn fit_by_dropping(
    session: &LoadedModel,
    messages: &[Message],
    extras: &ChatExtras,
    droppable: &[usize],
    from: usize,
    limits: SeqLimits,
) -> Result<Vec<TokenId>, ApiError> {
    let render = |k: usize| -> Result<Vec<TokenId>, ApiError> {
        let cut = if k == 0 { None } else { Some(droppable[k - 1]) };
        let kept: Vec<Message> = messages
            .iter()
            .enumerate()
            .filter(|&(i, m)| !cut.is_some_and(|c| i <= c && m.role != "system"))
            .map(|(_, m)| m.clone())
            .collect();
        Ok(session.chat_prompt_with(&kept, extras)?)
    };
    let fits = |t: &[TokenId]| limits.check_prompt(t.len()).is_ok();
    let first = render(from)?;
    if fits(&first) {
        return Ok(first);
    }
    let (mut lo, mut hi) = (from, droppable.len());
    let mut best = render(hi)?;
    check_tokens(limits, best.len(), "messages")?;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let tokens = render(mid)?;
        if fits(&tokens) {
            (hi, best) = (mid, tokens);
        } else {
            lo = mid;
        }
    }
    Ok(best)
}

/// Compiles what a request's output must match (on the blocking pool: a
/// large schema takes a while). A schema or grammar that cannot be used is a
/// 400 naming `param`, before anything is queued.
pub async fn guide(state: &Served, constraint: Constraint, param: &str) -> Result<Guide, ApiError> {
    off_worker(state, move |s| s.guide(&constraint)).await?.map_err(|e| match e {
        EngineError::Constraint(e) => ApiError::invalid(param, format!("{param} cannot be used: {e}")),
        other => ApiError::from(other),
    })
}

/// Most bytes of text that could still fit: the longest sequence times the
/// most bytes one token stands for.
fn byte_bound(state: &Served) -> usize {
    state.engine.limits().max_seq_len().saturating_mul(state.engine.session().tokenizer.max_token_bytes())
}

/// Refuses `bytes` of text that cannot fit whatever its tokens, before
/// tokenizing it (a multi-megabyte body would otherwise cost its size many
/// times over in tokenizer memory before being refused).
fn check_bytes(state: &Served, bytes: usize, param: &str) -> Result<(), ApiError> {
    if bytes <= byte_bound(state) {
        return Ok(());
    }
    let at_least = bytes / state.engine.session().tokenizer.max_token_bytes();
    let limit = state.engine.limits().max_seq_len();
    Err(ApiError::context_length(
        param,
        format!("{bytes} bytes of text are at least {at_least} tokens, more than a sequence may hold ({limit} tokens)"),
    ))
}

/// The scheduler's own refusal of a prompt of `len` tokens, naming `param`.
fn check_tokens(limits: SeqLimits, len: usize, param: &str) -> Result<(), ApiError> {
    limits
        .check_prompt(len)
        .map_err(|refusal| ApiError { param: Some(param.to_owned()), ..ApiError::from(EngineError::Rejected(refusal)) })
}

/// Runs `work` on the blocking pool, at most `prep_slots` at a time.
async fn off_worker<T: Send + 'static>(
    state: &Served,
    work: impl FnOnce(&LoadedModel) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = state.prep_slots.acquire().await.map_err(|_| ApiError::internal("server is shutting down"))?;
    let session = Arc::clone(state.engine.session());
    tokio::task::spawn_blocking(move || work(&session))
        .await
        .map_err(|_| ApiError::internal("preparing the prompt failed"))
}
