//! Response bodies and stream chunks in OpenAI's shapes, for both the chat
//! and the legacy text-completion endpoint.

use hearth_engine::batching::{TokenLogprob, Usage};
use hearth_engine::FinishReason;
use hearth_text::Tokenizer;
use serde_json::{json, Value};

/// OpenAI's `system_fingerprint`: which backend configuration answered.
pub const SYSTEM_FINGERPRINT: &str = concat!("hearth-", env!("CARGO_PKG_VERSION"));

/// An id unique within the process, `PREFIX_` and 24 hex digits (the
/// clock and a counter): call ids, message and response ids.
#[must_use]
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}_{t:016x}{:08x}", n as u32)
}

/// Which endpoint's shapes to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

/// What every body of one response shares.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Endpoint.
    pub endpoint: Endpoint,
    /// `chatcmpl-…` / `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// Name tokens in logprobs `token_id:ID` instead of their text (vLLM's
    /// `return_tokens_as_token_ids`: exact where texts collide or are partial UTF-8).
    pub token_ids: bool,
}

/// One choice, accumulated (non-streaming replies).
#[derive(Debug, Clone, Default)]
pub struct ChoiceText {
    /// Text so far.
    pub text: String,
    /// Per-token log-probabilities, when asked.
    pub logprobs: Vec<(u32, TokenLogprob)>,
    /// How it ended.
    pub finish: Option<FinishReason>,
    /// Tool calls found in the reply (OpenAI's shape); `text` is then
    /// what remained outside them.
    pub tool_calls: Vec<Value>,
    /// A reasoning model's thoughts (`reasoning_content`).
    pub reasoning: Option<String>,
    /// The stop string that ended the text, if one did (vLLM's `stop_reason`).
    pub stop_string: Option<String>,
    /// Bytes of echoed prompt at the start of `text` (where token offsets begin).
    pub echo_len: usize,
}

/// OpenAI's finish reason for ours (`context` is a `length` to clients).
#[must_use]
pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Context => "length",
    }
}

/// The `usage` object.
#[must_use]
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// Log-probabilities of `tokens` in the endpoint's shape; tokens named by
/// their text, or `token_id:ID` with `token_ids`.
#[must_use]
pub fn logprobs_json(endpoint: Endpoint, tok: &Tokenizer, tokens: &[(u32, TokenLogprob)], offset0: usize, token_ids: bool) -> Value {
    let piece = |t: u32| {
        let bytes = tok.token_bytes(t).to_vec();
        let name = if token_ids { format!("token_id:{t}") } else { String::from_utf8_lossy(&bytes).into_owned() };
        (name, bytes)
    };
    match endpoint {
        Endpoint::Chat => {
            let entry = |t: u32, lp: f32| {
                let (text, bytes) = piece(t);
                json!({"token": text, "logprob": lp, "bytes": bytes})
            };
            let content: Vec<Value> = tokens
                .iter()
                .map(|(t, lp)| {
                    let mut e = entry(*t, lp.logprob);
                    e["top_logprobs"] = lp.top.iter().map(|&(a, l)| entry(a, l)).collect();
                    e
                })
                .collect();
            json!({"content": content})
        }
        Endpoint::Text => {
            let mut offset = offset0;
            let (mut texts, mut lps, mut tops, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (t, lp) in tokens {
                let (text, bytes) = piece(*t);
                offsets.push(offset);
                // Offsets count the token's bytes (a piece that is part of a
                // character shows as U+FFFD but takes its own bytes).
                offset += bytes.len();
                texts.push(text);
                lps.push(lp.logprob);
                let top: serde_json::Map<String, Value> =
                    lp.top.iter().map(|&(a, l)| (piece(a).0, json!(l))).collect();
                tops.push(Value::Object(top));
            }
            json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
        }
    }
}

impl Envelope {
    #[allow(clippy::needless_pass_by_value)] // callers build the value for this call
    fn wrap(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        })
    }

    /// The whole non-streamed reply.
    #[must_use]
    pub fn reply(&self, tok: &Tokenizer, choices: &[ChoiceText], usage: &Usage) -> Value {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let lp = (!c.logprobs.is_empty()).then(|| logprobs_json(self.endpoint, tok, &c.logprobs, c.echo_len, self.token_ids));
                // Calls cut short by max_tokens still say `length`.
                let finish = match c.finish {
                    Some(FinishReason::Stop) if !c.tool_calls.is_empty() => Some("tool_calls"),
                    f => f.map(finish_reason),
                };
                match self.endpoint {
                    Endpoint::Chat => {
                        let mut message = json!({"role": "assistant", "content": c.text});
                        if let Some(r) = &c.reasoning {
                            message["reasoning_content"] = json!(r);
                        }
                        if !c.tool_calls.is_empty() {
                            if c.text.is_empty() {
                                message["content"] = Value::Null;
                            }
                            message["tool_calls"] = Value::Array(c.tool_calls.clone());
                        }
                        json!({"index": i, "message": message, "logprobs": lp, "finish_reason": finish, "stop_reason": c.stop_string})
                    }
                    Endpoint::Text => {
                        json!({"index": i, "text": c.text, "logprobs": lp, "finish_reason": finish, "stop_reason": c.stop_string})
                    }
                }
            })
            .collect();
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion",
            Endpoint::Text => "text_completion",
        };
        let mut v = self.wrap(object, Value::Array(choices));
        v["usage"] = usage_json(usage);
        v
    }

    fn chunk_object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Text => "text_completion",
        }
    }

    /// A stream chunk for choice `index`: new text, optional logprobs, and
    /// the finish reason on the last one.
    #[must_use]
    #[allow(clippy::needless_pass_by_value)] // callers build the value for this call
    pub fn chunk(&self, index: usize, text: &str, logprobs: Option<Value>, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(finish_reason);
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let delta = if text.is_empty() && finish.is_some() { json!({}) } else { json!({"content": text}) };
                json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Endpoint::Text => json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}),
        };
        self.wrap(self.chunk_object(), json!([choice]))
    }

    /// A chunk carrying choice `index`'s tool calls, whole (each with its
    /// position in the reply, as OpenAI's deltas have).
    #[must_use]
    pub fn tool_calls_chunk(&self, index: usize, calls: &[Value]) -> Value {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let mut c = c.clone();
                c["index"] = json!(k);
                c
            })
            .collect();
        self.wrap(
            self.chunk_object(),
            json!([{"index": index, "delta": {"tool_calls": calls}, "logprobs": null, "finish_reason": null}]),
        )
    }

    /// A chunk of choice `index`'s thoughts (`reasoning_content`).
    #[must_use]
    pub fn reasoning_chunk(&self, index: usize, text: &str) -> Value {
        self.wrap(
            self.chunk_object(),
            json!([{"index": index, "delta": {"reasoning_content": text}, "logprobs": null, "finish_reason": null}]),
        )
    }

    /// The last chunk of a choice that ended in tool calls.
    #[must_use]
    pub fn tool_calls_finish_chunk(&self, index: usize) -> Value {
        self.wrap(
            self.chunk_object(),
            json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]),
        )
    }

    /// The opening chunk of a chat choice (announces the assistant role).
    #[must_use]
    pub fn role_chunk(&self, index: usize) -> Value {
        self.wrap(
            self.chunk_object(),
            json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
        )
    }

    /// The closing chunk with usage and no choices (`stream_options.include_usage`).
    #[must_use]
    pub fn usage_chunk(&self, usage: &Usage) -> Value {
        let mut v = self.wrap(self.chunk_object(), json!([]));
        v["usage"] = usage_json(usage);
        v
    }
}
