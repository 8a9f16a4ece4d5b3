use std::collections::{HashMap, VecDeque};

use hearth_core::TokenId;

use crate::{LogitsProcessor, SamplingParams};

/// Repetition, presence and frequency penalties over the last N tokens
/// (llama.cpp's `penalties` sampler semantics).
pub struct Penalties {
    repeat: f32,
    presence: f32,
    frequency: f32,
    window: usize,
    recent: VecDeque<TokenId>,
    counts: HashMap<TokenId, u32>,
}

impl Penalties {
    /// Penalties configured from `p`.
    #[must_use]
    pub fn new(p: &SamplingParams) -> Self {
        Self {
            repeat: p.repeat_penalty,
            presence: p.presence_penalty,
            frequency: p.frequency_penalty,
            window: p.penalty_last_n,
            recent: VecDeque::new(),
            counts: HashMap::new(),
        }
    }
}

impl LogitsProcessor for Penalties {
    fn apply(&mut self, logits: &mut [f32]) {
        for (&t, &n) in &self.counts {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            *l = if *l > 0.0 { *l / self.repeat } else { *l * self.repeat };
            *l -= n as f32 * self.frequency + self.presence;
        }
    }

    fn accept(&mut self, token: TokenId) {
        if self.window == 0 {
            return;
        }
        self.recent.push_back(token);
        *self.counts.entry(token).or_default() += 1;
        if self.recent.len() > self.window {
            if let Some(old) = self.recent.pop_front() {
                if let Some(c) = self.counts.get_mut(&old) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)]
mod tests {
    use super::*;

    #[test]
    fn repeat_penalty_shrinks_seen_tokens() {
        let mut p = Penalties::new(&SamplingParams { repeat_penalty: 2.0, ..SamplingParams::default() });
        p.accept(0);
        p.accept(1);
        let mut l = [4.0, -4.0, 4.0];
        p.apply(&mut l);
        assert_eq!(l, [2.0, -8.0, 4.0]);
    }

    #[test]
    fn window_forgets_old_tokens() {
        let mut p =
            Penalties::new(&SamplingParams { presence_penalty: 1.0, penalty_last_n: 1, ..SamplingParams::default() });
        p.accept(0);
        p.accept(1);
        let mut l = [0.0, 0.0];
        p.apply(&mut l);
        assert_eq!(l, [0.0, -1.0]);
    }
}
