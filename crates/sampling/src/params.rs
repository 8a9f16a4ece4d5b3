use hearth_core::TokenId;

/// Everything that decides how a sequence is sampled and when it stops.
///
/// This is the one home of the sampling rules: the defaults
/// ([`SamplingParams::default`], llama.cpp's, and
/// [`SamplingParams::openai_defaults`] for the HTTP API) and the limits
/// ([`SamplingParams::validate`]), which the CLI, the library's entry points
/// and the server all call, so a value is refused the same way everywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 selects greedy decoding.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recent tokens (1 = off).
    pub repeat_penalty: f32,
    /// Subtract from logits of tokens seen at all (0 = off).
    pub presence_penalty: f32,
    /// Subtract, per occurrence, from logits of seen tokens (0 = off).
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Added to the logits of these tokens before anything else (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(TokenId, f32)>,
    /// RNG seed; equal seeds give equal samples.
    pub seed: u64,
    /// Maximum new tokens.
    pub max_tokens: usize,
    /// Generation stops before any of these strings; they are not returned.
    pub stop: Vec<String>,
}

/// A sampling parameter outside its range: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidParam {
    /// The parameter's name as the API spells it (`top_p`, `logit_bias`, …).
    pub field: &'static str,
    /// What is wrong, for humans.
    pub message: String,
}

impl InvalidParam {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// Limits [`SamplingParams::validate`] enforces.
pub mod limits {
    /// Highest temperature (OpenAI's bound; above it text is noise).
    pub const MAX_TEMPERATURE: f32 = 2.0;
    /// Presence and frequency penalties lie in ±this (OpenAI's bound).
    pub const MAX_ABS_PENALTY: f32 = 2.0;
    /// Highest repetition penalty (llama.cpp's useful range is 1–1.5).
    pub const MAX_REPEAT_PENALTY: f32 = 10.0;
    /// Logit biases lie in ±this (OpenAI's bound).
    pub const MAX_ABS_LOGIT_BIAS: f32 = 100.0;
    /// Most logit-bias entries (OpenAI's bound is 300).
    pub const MAX_LOGIT_BIAS_ENTRIES: usize = 1024;
    /// Most stop strings (OpenAI's bound).
    pub const MAX_STOPS: usize = 4;
    /// Longest stop string in bytes: the matcher holds back up to this much text.
    pub const MAX_STOP_BYTES: usize = 1024;
    /// Longest penalty window.
    pub const MAX_PENALTY_LAST_N: usize = 1 << 20;
}

impl Default for SamplingParams {
    /// llama.cpp's defaults (what `hearth run` uses): temp 0.8, top-k 40,
    /// top-p 0.95, min-p 0.05.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0,
            max_tokens: 256,
            stop: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with otherwise default settings.
    #[must_use]
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    /// OpenAI's defaults, for API requests that leave a field out:
    /// temperature 1, no top-k, top-p 1, no min-p.
    #[must_use]
    pub fn openai_defaults() -> Self {
        Self { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Self::default() }
    }

    /// Whether any penalty is active.
    #[must_use]
    #[allow(clippy::float_cmp)] // exact: the neutral values are set literally, never computed
    pub fn has_penalties(&self) -> bool {
        self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    /// Checks every field against its range for a model of `n_vocab` tokens.
    /// Every entry point calls this before a request is queued, so the
    /// sampler never sees a value it cannot honour.
    pub fn validate(&self, n_vocab: usize) -> Result<(), InvalidParam> {
        use limits::{
            MAX_ABS_LOGIT_BIAS, MAX_ABS_PENALTY, MAX_LOGIT_BIAS_ENTRIES, MAX_PENALTY_LAST_N, MAX_REPEAT_PENALTY,
            MAX_STOPS, MAX_STOP_BYTES, MAX_TEMPERATURE,
        };
        let in_range = |v: f32, lo: f32, hi: f32| v.is_finite() && (lo..=hi).contains(&v);
        if !in_range(self.temperature, 0.0, MAX_TEMPERATURE) {
            return Err(InvalidParam::new(
                "temperature",
                format!("temperature must be between 0 and {MAX_TEMPERATURE}"),
            ));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(InvalidParam::new("top_p", "top_p must be in (0, 1]"));
        }
        if self.top_k > n_vocab {
            return Err(InvalidParam::new(
                "top_k",
                format!("top_k must be between 0 (off) and the vocabulary size, {n_vocab}"),
            ));
        }
        if !in_range(self.min_p, 0.0, 1.0) {
            return Err(InvalidParam::new("min_p", "min_p must be between 0 and 1"));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0 && self.repeat_penalty <= MAX_REPEAT_PENALTY)
        {
            return Err(InvalidParam::new(
                "repeat_penalty",
                format!("repeat_penalty must be in (0, {MAX_REPEAT_PENALTY}] (1 = off)"),
            ));
        }
        for (field, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if !in_range(v, -MAX_ABS_PENALTY, MAX_ABS_PENALTY) {
                return Err(InvalidParam::new(field, format!("{field} must be between -2 and 2")));
            }
        }
        if self.penalty_last_n > MAX_PENALTY_LAST_N {
            return Err(InvalidParam::new(
                "penalty_last_n",
                format!("penalty_last_n must be at most {MAX_PENALTY_LAST_N}"),
            ));
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS_ENTRIES {
            return Err(InvalidParam::new(
                "logit_bias",
                format!("logit_bias takes at most {MAX_LOGIT_BIAS_ENTRIES} entries"),
            ));
        }
        for &(token, bias) in &self.logit_bias {
            if token as usize >= n_vocab {
                return Err(InvalidParam::new(
                    "logit_bias",
                    format!("logit_bias names token {token}, outside the vocabulary of {n_vocab} tokens"),
                ));
            }
            if !in_range(bias, -MAX_ABS_LOGIT_BIAS, MAX_ABS_LOGIT_BIAS) {
                return Err(InvalidParam::new("logit_bias", "logit_bias values must be between -100 and 100"));
            }
        }
        if self.max_tokens == 0 {
            return Err(InvalidParam::new("max_tokens", "max_tokens must be at least 1"));
        }
        if self.stop.len() > MAX_STOPS || self.stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return Err(InvalidParam::new(
                "stop",
                format!("stop takes up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_BYTES} bytes"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(p: &SamplingParams) -> Option<&'static str> {
        p.validate(1000).err().map(|e| e.field)
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(field_of(&SamplingParams::default()), None);
        assert_eq!(field_of(&SamplingParams::greedy()), None);
        assert_eq!(field_of(&SamplingParams::openai_defaults()), None);
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let d = SamplingParams::default;
        let cases = [
            (SamplingParams { temperature: -1.0, ..d() }, "temperature"),
            (SamplingParams { temperature: f32::NAN, ..d() }, "temperature"),
            (SamplingParams { top_p: 0.0, ..d() }, "top_p"),
            (SamplingParams { top_k: 1_000_000_000_000, ..d() }, "top_k"),
            (SamplingParams { min_p: 2.0, ..d() }, "min_p"),
            (SamplingParams { repeat_penalty: 0.0, ..d() }, "repeat_penalty"),
            (SamplingParams { repeat_penalty: -1.0, ..d() }, "repeat_penalty"),
            (SamplingParams { repeat_penalty: 1e38, ..d() }, "repeat_penalty"),
            (SamplingParams { frequency_penalty: 5.0, ..d() }, "frequency_penalty"),
            (SamplingParams { presence_penalty: f32::INFINITY, ..d() }, "presence_penalty"),
            (SamplingParams { logit_bias: vec![(1000, 1.0)], ..d() }, "logit_bias"),
            (SamplingParams { logit_bias: vec![(3, 101.0)], ..d() }, "logit_bias"),
            (SamplingParams { max_tokens: 0, ..d() }, "max_tokens"),
            (SamplingParams { stop: vec![String::new()], ..d() }, "stop"),
            (SamplingParams { stop: vec!["x".repeat(2000)], ..d() }, "stop"),
        ];
        for (p, want) in cases {
            assert_eq!(field_of(&p), Some(want), "{p:?}");
        }
    }
}
