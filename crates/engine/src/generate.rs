//! Single-sequence generation: prefill the prompt in chunks, then decode
//! token by token, streaming UTF-8-safe text through a callback.

use hearth_core::{ForwardBatch, SeqId, TokenId};
use hearth_models::SequenceCache;
use hearth_sampling::{Sampler, SamplingParams, StopMatcher};
use hearth_text::IncrementalDecoder;

use crate::{EngineError, Session};

/// Tokens per prefill forward pass: bounds activation memory.
const PREFILL_CHUNK: usize = 512;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    Context,
}

/// Result of [`Session::generate`].
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// The generated text (stop strings removed).
    pub text: String,
    /// The generated token ids.
    pub tokens: Vec<TokenId>,
    /// Why it ended.
    pub finish: FinishReason,
    /// Prompt tokens evaluated.
    pub prompt_tokens: usize,
    /// Seconds spent in prompt prefill.
    pub prefill_secs: f64,
    /// Seconds spent decoding.
    pub decode_secs: f64,
}

impl Session {
    /// Evaluates `tokens` for `seq` starting at `start`; returns the logits of the last one.
    pub fn prefill(
        &self,
        kv: &mut SequenceCache,
        seq: SeqId,
        tokens: &[TokenId],
        start: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let mut logits = Vec::new();
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let batch = ForwardBatch::single(seq, chunk, start + i * PREFILL_CHUNK);
            logits = kv.forward(self.model.as_ref(), batch)?;
        }
        Ok(logits)
    }

    /// Generates a continuation of `prompt` (already tokenized), calling
    /// `on_text` with each piece of finished text as it is produced.
    pub fn generate(
        &self,
        prompt: &[TokenId],
        params: &SamplingParams,
        mut on_text: impl FnMut(&str),
    ) -> Result<GenerateOutput, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::Invalid("empty prompt".into()));
        }
        if prompt.len() >= self.n_ctx {
            return Err(EngineError::PromptTooLong { prompt: prompt.len(), context: self.n_ctx });
        }
        let seq = SeqId(0);
        let mut kv = self.new_cache()?;
        let t0 = std::time::Instant::now();
        let mut logits = self.prefill(&mut kv, seq, prompt, 0)?;
        let prefill_secs = t0.elapsed().as_secs_f64();

        let t1 = std::time::Instant::now();
        let mut sampler = Sampler::new(params.clone(), prompt);
        let mut decoder = IncrementalDecoder::new();
        let mut stops = StopMatcher::new(&params.stop);
        let mut out = GenerateOutput {
            text: String::new(),
            tokens: Vec::new(),
            finish: FinishReason::Length,
            prompt_tokens: prompt.len(),
            prefill_secs,
            decode_secs: 0.0,
        };
        let mut pos = prompt.len();
        while out.tokens.len() < params.max_tokens {
            let token = sampler.sample(&mut logits);
            if self.tokenizer.is_end_of_generation(token) {
                out.finish = FinishReason::Stop;
                break;
            }
            out.tokens.push(token);
            let (text, hit) = stops.push(&decoder.push(self.tokenizer.token_bytes(token)));
            out.text.push_str(&text);
            on_text(&text);
            if hit {
                out.finish = FinishReason::Stop;
                break;
            }
            if pos + 1 >= self.n_ctx {
                out.finish = FinishReason::Context;
                break;
            }
            if out.tokens.len() == params.max_tokens {
                break;
            }
            logits = kv.forward(self.model.as_ref(), ForwardBatch::single(seq, &[token], pos))?;
            pos += 1;
        }
        if out.finish != FinishReason::Stop {
            let (tail, _) = stops.push(&decoder.finish());
            let tail = tail + &stops.finish();
            out.text.push_str(&tail);
            on_text(&tail);
        }
        out.decode_secs = t1.elapsed().as_secs_f64();
        Ok(out)
    }
}
