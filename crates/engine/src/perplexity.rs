//! Perplexity with llama.cpp's method (`llama-perplexity`): the text is cut
//! into non-overlapping chunks of `n_ctx` tokens, the first token of each
//! chunk is replaced by BOS when the vocabulary adds one, and only the second
//! half of each chunk is scored (so every scored token has at least
//! `n_ctx / 2` tokens of context).

use hearth_core::{ForwardBatch, SeqId};
use serde::Serialize;

use crate::batching::EngineConfig;
use crate::{EngineError, LoadedModel};

/// Result of a perplexity run.
#[derive(Debug, Clone, Serialize)]
pub struct PerplexityReport {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored.
    pub tokens: usize,
}

/// Runs the evaluation with chunks of `config.n_ctx` tokens over a KV cache
/// of `config.kv_type`; `on_chunk(i, running_ppl)` reports progress.
pub fn perplexity(
    session: &LoadedModel,
    text: &str,
    config: &EngineConfig,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PerplexityReport, EngineError> {
    let n_ctx = config.n_ctx;
    if n_ctx < 8 {
        return Err(EngineError::Invalid(format!("context {n_ctx} is too small for perplexity")));
    }
    let tokens = session.tokenizer.encode(text, true)?;
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(EngineError::Invalid(format!("text has {} tokens, fewer than one chunk of {n_ctx}", tokens.len())));
    }
    let first = n_ctx / 2;
    let n_vocab = session.model.config().n_vocab;
    let (mut nll, mut count) = (0f64, 0usize);
    for c in 0..n_chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let (true, Some(bos)) = (session.tokenizer.add_bos, session.tokenizer.bos) {
            chunk[0] = bos;
        }
        let mut kv = session.new_cache(config)?;
        let mut batch = ForwardBatch::single(SeqId(0), &chunk, 0);
        batch.logit_rows = (first..n_ctx - 1).collect();
        let logits = kv.forward(session.model.as_ref(), batch)?;
        for (i, row) in logits.chunks_exact(n_vocab).enumerate() {
            let target = chunk[first + i + 1] as usize;
            nll -= log_softmax_at(row, target);
            count += 1;
        }
        on_chunk(c, (nll / count as f64).exp());
    }
    Ok(PerplexityReport { ppl: (nll / count as f64).exp(), chunks: n_chunks, tokens: count })
}

/// `log(softmax(row)[target])`, computed in f64 for stability.
fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}
