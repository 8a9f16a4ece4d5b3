//! `POST /v1/completions`: a prompt as text, token ids, or llama-server's
//! mix of the two.

use serde::Deserialize;

use super::sampling::{Sampling, MAX_TOP_LOGPROBS};
use crate::error::ApiError;

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// What to continue: a string, token ids, or llama-server's mix of the
    /// two (`[12, 34, "text", 56]`); a list holding one prompt of these.
    pub prompt: serde_json::Value,
    /// Alternatives per token (legacy logprobs).
    pub logprobs: Option<usize>,
    /// Echo the prompt before the completion.
    #[serde(default)]
    pub echo: bool,
    /// Shared fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl CompletionRequest {
    /// Tools belong to chats: a text completion has no turns to call from.
    pub fn check_no_tools(&self) -> Result<(), ApiError> {
        if self.sampling.has_tools() {
            return Err(ApiError::invalid("tools", "tools are for /v1/chat/completions"));
        }
        Ok(())
    }

    /// The single prompt, as text and token pieces (ids checked against
    /// the vocabulary when it is tokenized).
    pub fn prompt(&self) -> Result<Vec<PromptPiece>, ApiError> {
        prompt_pieces(&self.prompt)
    }

    /// Alternatives per token, checked.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match self.logprobs {
            Some(k) if k > MAX_TOP_LOGPROBS => Err(ApiError::invalid("logprobs", format!("logprobs must be at most {MAX_TOP_LOGPROBS}"))),
            k => Ok(k),
        }
    }
}

/// One piece of a text-completion prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptPiece {
    /// Text, tokenized (control-token texts count: the client writes the
    /// whole prompt).
    Text(String),
    /// A token id, used as it is.
    Token(u32),
}

impl PromptPiece {
    /// The prompt as text: token pieces as their text.
    #[must_use]
    pub fn text_of(pieces: &[Self], tokenizer: &hearth_text::Tokenizer) -> String {
        pieces
            .iter()
            .map(|p| match p {
                Self::Text(t) => t.clone(),
                Self::Token(t) => tokenizer.decode_with_control(&[*t]),
            })
            .collect()
    }
}

/// The single prompt a request's `prompt` holds, as text and token pieces
/// (ids checked against the vocabulary when it is tokenized).
pub fn prompt_pieces(prompt: &serde_json::Value) -> Result<Vec<PromptPiece>, ApiError> {
    use serde_json::Value;
    let one = |v: &Value| -> Result<Vec<PromptPiece>, ApiError> {
        let piece = |p: &Value| match p {
            Value::String(s) => Ok(PromptPiece::Text(s.clone())),
            Value::Number(n) => n
                .as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .map(PromptPiece::Token)
                .ok_or_else(|| ApiError::invalid("prompt", format!("{n} is not a token id"))),
            _ => Err(ApiError::invalid("prompt", "a prompt is a string, token ids, or a list mixing the two")),
        };
        match v {
            Value::Array(parts) => parts.iter().map(piece).collect(),
            other => Ok(vec![piece(other)?]),
        }
    };
    let pieces = match prompt {
        serde_json::Value::Array(items) if items.len() == 1 && matches!(items[0], Value::String(_) | Value::Array(_)) => one(&items[0])?,
        serde_json::Value::Array(items) if items.iter().any(Value::is_array) || (items.len() > 1 && items.iter().all(Value::is_string)) => {
            return Err(ApiError::invalid("prompt", "send one prompt per request"))
        }
        v => one(v)?,
    };
    if pieces.iter().all(|p| matches!(p, PromptPiece::Text(t) if t.is_empty())) {
        return Err(ApiError::invalid("prompt", "prompt must not be empty"));
    }
    Ok(pieces)
}
