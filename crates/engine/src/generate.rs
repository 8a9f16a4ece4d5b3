//! Single-request generation (the serving engine with a batch of one) and
//! the raw single-sequence prefill that benches use.

use std::sync::mpsc;
use std::time::Instant;

use hearth_core::{ForwardBatch, SeqId, TokenId};
use hearth_models::SequenceCache;
use hearth_sampling::SamplingParams;

use crate::batching::{Engine, EngineConfig, Event, GenRequest};
use crate::metrics::Metrics;
use crate::{EngineError, LoadedModel};

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

impl FinishReason {
    /// Short name (`stop`, `length`, `context`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Context => "context",
        }
    }
}

/// Result of [`LoadedModel::generate`].
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

impl LoadedModel {
    /// Evaluates `tokens` for `seq` starting at `start`; returns the logits of the last one.
    pub fn prefill(
        &self,
        kv: &mut SequenceCache,
        seq: SeqId,
        tokens: &[TokenId],
        start: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let mut logits = Vec::new();
        let chunk_len = EngineConfig::TOKEN_BUDGET;
        for (i, chunk) in tokens.chunks(chunk_len).enumerate() {
            let batch = ForwardBatch::single(seq, chunk, start + i * chunk_len);
            logits = kv.forward(self.model.as_ref(), batch)?;
        }
        Ok(logits)
    }

    /// Generates a continuation of `prompt` (already tokenized) under
    /// `config` (usually [`EngineConfig::single`]), calling `on_text` with
    /// each piece of finished text as it is produced. This is the serving
    /// engine with a batch of one, so the reply is the one the server gives
    /// for the same request.
    pub fn generate(
        &self,
        prompt: &[TokenId],
        params: &SamplingParams,
        config: &EngineConfig,
        on_text: impl FnMut(&str),
    ) -> Result<GenerateOutput, EngineError> {
        self.generate_request(GenRequest::new(prompt.to_vec(), params.clone()), config, on_text)
    }

    /// As [`LoadedModel::generate`], for a whole request (a constraint,
    /// `ignore_eos`).
    pub fn generate_request(
        &self,
        request: GenRequest,
        config: &EngineConfig,
        mut on_text: impl FnMut(&str),
    ) -> Result<GenerateOutput, EngineError> {
        let prompt_tokens = request.prompt.len();
        let mut engine = Engine::new(self, *config, Metrics::new())?;
        let (tx, rx) = mpsc::channel();
        engine.submit(request, Box::new(move |e| tx.send(e).is_ok()))?;
        let mut out = GenerateOutput {
            text: String::new(),
            tokens: Vec::new(),
            finish: FinishReason::Length,
            prompt_tokens,
            prefill_secs: 0.0,
            decode_secs: 0.0,
        };
        let t0 = Instant::now();
        let mut first_token: Option<Instant> = None;
        while !engine.is_idle() {
            engine.step();
            for event in rx.try_iter() {
                match event {
                    Event::Token { token, text, .. } => {
                        first_token.get_or_insert_with(Instant::now);
                        out.tokens.push(token);
                        out.text.push_str(&text);
                        on_text(&text);
                    }
                    Event::Done { text, finish, .. } => {
                        out.text.push_str(&text);
                        on_text(&text);
                        out.finish = finish;
                    }
                    Event::Error(why) => return Err(EngineError::Invalid(why)),
                }
            }
        }
        let first = first_token.unwrap_or_else(Instant::now);
        out.prefill_secs = (first - t0).as_secs_f64();
        out.decode_secs = first.elapsed().as_secs_f64();
        Ok(out)
    }
}
