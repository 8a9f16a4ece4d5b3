/// Everything that decides how a sequence is sampled and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; ≤ 0 selects greedy decoding.
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
    /// RNG seed; equal seeds give equal samples.
    pub seed: u64,
    /// Maximum new tokens.
    pub max_tokens: usize,
    /// Generation stops before any of these strings; they are not returned.
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults: temp 0.8, top-k 40, top-p 0.95, min-p 0.05.
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

    /// Whether any penalty is active.
    #[must_use]
    #[allow(clippy::float_cmp)] // exact: the neutral values are set literally, never computed
    pub fn has_penalties(&self) -> bool {
        self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }
}
