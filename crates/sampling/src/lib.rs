//! Turning logits into the next token.
//!
//! A [`Sampler`] applies a chain of [`LogitsProcessor`]s (logit bias, then
//! repetition / presence / frequency penalties), then truncation (top-k,
//! top-p, min-p), temperature and a draw from a seeded ChaCha RNG — the order
//! llama.cpp's default chain uses. Temperature 0 means greedy (arg-max).
//! Pure logic: no model, no tensors.
//!
//! The sampler is total: whatever the logits and parameters (even ones
//! [`SamplingParams::validate`] would refuse), it returns a token id inside
//! the row and never panics — one request's odd values must not end a step
//! that other users share.

mod params;
mod penalties;
mod stop;

use hearth_core::TokenId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use params::{limits, InvalidParam, SamplingParams};
pub use penalties::Penalties;
pub use stop::StopMatcher;

/// A step of the sampling chain that edits logits in place.
pub trait LogitsProcessor: Send {
    /// Adjusts `logits` (one per vocabulary entry).
    fn apply(&mut self, logits: &mut [f32]);
    /// Records that `token` was chosen.
    fn accept(&mut self, token: TokenId);
}

/// Samples tokens for one sequence.
pub struct Sampler {
    params: SamplingParams,
    processors: Vec<Box<dyn LogitsProcessor>>,
    rng: ChaCha8Rng,
    candidates: Vec<(TokenId, f32)>,
}

impl Sampler {
    /// A sampler for `params`; `history` are the prompt tokens (penalties see them).
    #[must_use]
    pub fn new(params: SamplingParams, history: &[TokenId]) -> Self {
        let mut processors: Vec<Box<dyn LogitsProcessor>> = Vec::new();
        if !params.logit_bias.is_empty() {
            processors.push(Box::new(LogitBias(params.logit_bias.clone())));
        }
        if params.has_penalties() {
            let mut p = Penalties::new(&params);
            history.iter().for_each(|&t| p.accept(t));
            processors.push(Box::new(p));
        }
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Self { params, processors, rng, candidates: Vec::new() }
    }

    /// Picks the next token from `logits` (modified in place) and records it.
    pub fn sample(&mut self, logits: &mut [f32]) -> TokenId {
        for p in &mut self.processors {
            p.apply(logits);
        }
        let token = if self.params.temperature <= 0.0 { argmax(logits) } else { self.draw(logits) };
        for p in &mut self.processors {
            p.accept(token);
        }
        token
    }

    fn draw(&mut self, logits: &[f32]) -> TokenId {
        let p = &self.params;
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, &l)| (i as TokenId, l)));
        if c.is_empty() {
            return argmax(logits);
        }
        // Every truncation below keeps at least the most likely candidate,
        // so the list is never empty.
        if p.top_k > 0 && p.top_k < c.len() {
            // `top_k - 1` is in range: 0 < top_k < len.
            c.select_nth_unstable_by(p.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            c.truncate(p.top_k);
        }
        // Softmax weights relative to the best (which weighs 1), unnormalized:
        // every rule below compares ratios, so the sum is only needed for top-p.
        let max = c.iter().map(|&(_, l)| l).fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for (_, l) in c.iter_mut() {
            *l = ((*l - max) / p.temperature).exp();
            sum += *l;
        }
        // min-p keeps weights of at least min_p × the best's, which is 1. It
        // runs after top-p in the chain, but cutting first is the same: top-p
        // normalizes by the full sum (taken above) and stops at the same
        // place whenever that place survives min-p.
        if p.min_p > 0.0 {
            c.retain(|&(_, w)| w >= p.min_p || w >= 1.0);
        }
        if c.is_empty() {
            // Only with odd parameters (a NaN temperature makes every weight NaN).
            return argmax(logits);
        }
        if p.top_p < 1.0 {
            // The nucleus is usually a few dozen tokens: sort a short head
            // first and the whole list only when the head's mass falls short.
            const HEAD: usize = 1024;
            let need = p.top_p * sum;
            if c.len() > HEAD {
                c.select_nth_unstable_by(HEAD - 1, |a, b| b.1.total_cmp(&a.1));
                if c[..HEAD].iter().map(|&(_, w)| w).sum::<f32>() >= need {
                    c.truncate(HEAD);
                }
            }
            c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
            let mut acc = 0.0;
            let keep = c.iter().position(|&(_, w)| {
                acc += w;
                acc >= need
            });
            c.truncate(keep.map_or(c.len(), |k| k + 1));
        } else if c.len() <= 1024 {
            // Small lists keep the best-first walk (seeded replies with
            // top-k stay as they were); a whole vocabulary with nothing to
            // truncate is drawn from in id order: the same distribution,
            // without sorting 100k+ entries per token.
            c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        }
        let best = c.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map_or(0, |&(t, _)| t);
        let total: f32 = c.iter().map(|&(_, q)| q).sum();
        if !(total.is_finite() && total > 0.0) {
            return best;
        }
        let mut x = self.rng.gen::<f32>() * total;
        for &(t, q) in c.iter() {
            if x < q {
                return t;
            }
            x -= q;
        }
        c.last().map_or(best, |&(t, _)| t)
    }
}

/// Adds fixed biases to chosen tokens' logits (OpenAI's `logit_bias`);
/// ids outside the row are skipped.
struct LogitBias(Vec<(TokenId, f32)>);

impl LogitsProcessor for LogitBias {
    fn apply(&mut self, logits: &mut [f32]) {
        for &(t, b) in &self.0 {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
    }

    fn accept(&mut self, _token: TokenId) {}
}

/// Index of the largest logit (first on ties).
#[must_use]
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as TokenId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_max() {
        let mut s = Sampler::new(SamplingParams::greedy(), &[]);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let params = SamplingParams { temperature: 1.0, seed: 42, ..SamplingParams::default() };
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = || {
            let mut s = Sampler::new(params.clone(), &[]);
            (0..20).map(|_| s.sample(&mut logits.clone())).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn top_k_one_is_greedy() {
        let params = SamplingParams { temperature: 5.0, top_k: 1, seed: 1, ..SamplingParams::default() };
        let mut s = Sampler::new(params, &[]);
        for _ in 0..10 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5]), 1);
        }
    }

    #[test]
    fn logit_bias_steers_the_choice() {
        let params = SamplingParams { logit_bias: vec![(2, 100.0), (99, 5.0)], ..SamplingParams::greedy() };
        let mut s = Sampler::new(params, &[]);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0]), 2);
    }

    /// Values `validate` refuses still give a token: the sampler never
    /// panics, whatever a caller passes.
    #[test]
    fn the_sampler_is_total() {
        let rows: [&[f32]; 5] = [
            &[0.0, 1.0, 0.5],
            &[f32::NAN, f32::NAN],
            &[f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0],
            &[f32::INFINITY, 0.0],
            &[1e38, -1e38, 3e38],
        ];
        let params = [
            SamplingParams { min_p: 2.0, temperature: 1.0, ..SamplingParams::default() },
            SamplingParams { min_p: f32::NAN, temperature: 1.0, ..SamplingParams::default() },
            SamplingParams { top_p: 0.0, temperature: 1.0, ..SamplingParams::default() },
            SamplingParams { top_p: -1.0, temperature: f32::NAN, ..SamplingParams::default() },
            SamplingParams { temperature: 1e-30, top_k: usize::MAX, ..SamplingParams::default() },
            SamplingParams { temperature: 1e30, ..SamplingParams::default() },
            SamplingParams { repeat_penalty: 0.0, frequency_penalty: f32::INFINITY, ..SamplingParams::default() },
            SamplingParams { repeat_penalty: -1.0, presence_penalty: f32::NAN, ..SamplingParams::default() },
            SamplingParams { logit_bias: vec![(u32::MAX, 1.0), (0, f32::NAN)], ..SamplingParams::default() },
        ];
        for p in params {
            for row in rows {
                let mut s = Sampler::new(p.clone(), &[0, 1, 1]);
                for _ in 0..3 {
                    let t = s.sample(&mut row.to_vec());
                    assert!((t as usize) < row.len(), "{p:?} on {row:?} gave {t}");
                }
            }
        }
    }

    #[test]
    fn min_p_above_one_keeps_the_best_token() {
        let params = SamplingParams { temperature: 1.0, min_p: 2.0, seed: 3, ..SamplingParams::default() };
        let mut s = Sampler::new(params, &[]);
        assert_eq!(s.sample(&mut [5.0, 4.9, -5.0]), 0);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let params = SamplingParams { temperature: 1.0, top_k: 0, min_p: 0.5, seed: 3, ..SamplingParams::default() };
        let mut s = Sampler::new(params, &[]);
        for _ in 0..50 {
            assert_ne!(s.sample(&mut [5.0, 4.9, -5.0]), 2);
        }
    }
}
