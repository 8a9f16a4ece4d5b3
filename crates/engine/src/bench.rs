//! `hearth bench`: prefill (pp) and decode (tg) throughput measured the way
//! `llama-bench` does (pp: one prompt of `p` tokens into an empty cache; tg:
//! `n` single-token steps from an empty cache), plus the decode roofline:
//! bytes read per token × tokens/s against the machine's measured memory
//! bandwidth.

use std::time::Instant;

use hearth_core::{ForwardBatch, SeqId, TokenId};
use hearth_models::SequenceCache;
use serde::Serialize;

use crate::batching::EngineConfig;
use crate::{EngineError, LoadedModel};

/// One test's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// `pp512`, `tg128`, ...
    pub test: String,
    /// Worker threads.
    pub threads: usize,
    /// Mean tokens per second over the repetitions.
    pub tokens_per_s: f64,
    /// Standard deviation of tokens per second.
    pub stddev: f64,
    /// Median tokens per second.
    pub median: f64,
}

/// Deterministic, valid token ids (a fixed stride through the vocabulary):
/// throughput does not depend on which tokens are fed.
fn synthetic_tokens(n: usize, vocab: usize) -> Vec<TokenId> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab.max(1)) as TokenId).collect()
}

fn summarize(test: String, threads: usize, rates: &[f64]) -> BenchResult {
    let n = rates.len().max(1) as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    BenchResult { test, threads, tokens_per_s: mean, stddev: var.sqrt(), median }
}

/// Tokens per second of `run` (which processes `tokens` tokens into a fresh
/// cache of `config`), `reps` times after one warm-up.
fn rates(
    session: &LoadedModel,
    config: &EngineConfig,
    tokens: usize,
    reps: usize,
    mut run: impl FnMut(&mut SequenceCache) -> Result<(), EngineError>,
) -> Result<Vec<f64>, EngineError> {
    let mut rates = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let mut kv = session.new_cache(config)?;
        let t0 = Instant::now();
        run(&mut kv)?;
        if rep > 0 {
            rates.push(tokens as f64 / t0.elapsed().as_secs_f64());
        }
    }
    Ok(rates)
}

/// Prefill of `p` tokens into an empty cache of `config`.
pub fn prefill(
    session: &LoadedModel,
    config: &EngineConfig,
    p: usize,
    reps: usize,
    threads: usize,
) -> Result<BenchResult, EngineError> {
    let tokens = synthetic_tokens(p, session.model.config().n_vocab);
    let r = rates(session, config, p, reps, |kv| session.prefill(kv, SeqId(0), &tokens, 0).map(drop))?;
    Ok(summarize(format!("pp{p}"), threads, &r))
}

/// `n` single-token decode steps from an empty cache of `config`.
pub fn decode(
    session: &LoadedModel,
    config: &EngineConfig,
    n: usize,
    reps: usize,
    threads: usize,
) -> Result<BenchResult, EngineError> {
    let tokens = synthetic_tokens(n, session.model.config().n_vocab);
    let r = rates(session, config, n, reps, |kv| {
        for (pos, &t) in tokens.iter().enumerate() {
            kv.forward(session.model.as_ref(), ForwardBatch::single(SeqId(0), &[t], pos))?;
        }
        Ok(())
    })?;
    Ok(summarize(format!("tg{n}"), threads, &r))
}

/// Bytes of weights one decode step reads: every matrix once (for a mixture
/// of experts, only the routed experts' share), in the form the backend keeps
/// it (repacked weights can be larger than the file's).
#[must_use]
pub fn weight_bytes_per_token(session: &LoadedModel) -> u64 {
    session.model.decode_bytes()
}

/// KV bytes read per decode step at context `ctx` (keys and values of
/// every layer, in `config`'s KV element type).
pub fn kv_bytes_per_token(session: &LoadedModel, config: &EngineConfig, ctx: usize) -> Result<u64, EngineError> {
    Ok(hearth_models::KvStore::bytes_per_token(session.model.config(), config.kv_type)? * ctx as u64)
}

/// Multiply-accumulates one prefill token costs in the blocks' matrices
/// (every `blk.*` matrix's elements; of expert tensors only the routed
/// share, `expert_used_count / expert_count`). The LM head is left out:
/// a prefill computes logits for its last row only. Attention's own
/// products (growing with the position) are not counted.
#[must_use]
pub fn matmul_macs_per_token(session: &LoadedModel) -> u64 {
    let file = &session.file;
    let arch = file.get_str("general.architecture").unwrap_or("");
    let key = |k: &str| file.get_u64(&format!("{arch}.{k}")).ok();
    let routed = match (key("expert_used_count"), key("expert_count")) {
        (Some(used), Some(count)) if count > 0 => used as f64 / count as f64,
        _ => 1.0,
    };
    let total: f64 = file
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("blk.") && t.dims.len() >= 2)
        .map(|t| {
            let elements = t.dims.iter().product::<u64>() as f64;
            if t.name.contains("_exps") { elements * routed } else { elements }
        })
        .sum();
    total as u64
}

/// Measured memory read bandwidth in GB/s: the best of a few passes that
/// sum a buffer far larger than the caches, split over `threads` threads
/// (the access pattern of a decode step: streaming reads, no writes).
#[must_use]
pub fn memory_bandwidth_gbs(threads: usize) -> f64 {
    const LEN: usize = 32 << 20; // 32 Mi u64 = 256 MiB
    const CHUNK: usize = 1 << 16;
    let src: Vec<u64> = (0..LEN as u64).collect();
    let threads = threads.max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut best = 0.0f64;
    for _ in 0..5 {
        next.store(0, std::sync::atomic::Ordering::Relaxed);
        let t0 = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut sum = 0u64;
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= LEN / CHUNK {
                                return sum;
                            }
                            sum = src[i * CHUNK..(i + 1) * CHUNK].iter().fold(sum, |a, &v| a.wrapping_add(v));
                        }
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or(0)).fold(0, u64::wrapping_add)
        });
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(total);
        best = best.max((LEN * 8) as f64 / secs / 1e9);
    }
    best
}
