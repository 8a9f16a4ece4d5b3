//! Request bodies as the handlers read them: the fields Hearth honours
//! (unknown fields are ignored, as OpenAI clients send many; features Hearth
//! lacks are refused by name). `sampling` holds the fields every generation
//! endpoint shares, `chat` the chat request (messages, tools), `completion`
//! the text-completion request (prompts as text or token ids).

mod chat;
mod completion;
mod sampling;

use serde::Deserialize;

pub use chat::ChatRequest;
pub use completion::{prompt_pieces, CompletionRequest, PromptPiece};
pub use sampling::{Checked, OverflowPolicy, Sampling, SamplingDefaults, MAX_N, MAX_TOP_LOGPROBS};

use crate::error::ApiError;

/// A string or a list of strings (`stop`, `prompt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Parses and checks a request body as the endpoint's handler does, without
/// an engine: every field rule, for a model of `n_vocab` tokens whose
/// sequences may reach `max_seq_len`. For fuzzing and tests; any input must
/// give `Ok` or an error, never a panic.
pub fn check_body(chat: bool, body: &[u8], n_vocab: usize, max_seq_len: usize) -> Result<(), ApiError> {
    let sampling = if chat {
        let req: ChatRequest = crate::parse(body)?;
        req.messages()?;
        req.logprobs()?;
        req.tools()?;
        req.sampling
    } else {
        let req: CompletionRequest = crate::parse(body)?;
        req.check_no_tools()?;
        req.prompt()?;
        req.logprobs()?;
        req.sampling
    };
    sampling.check(&SamplingDefaults::default(), max_seq_len, n_vocab)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::check_body;

    /// Field values a careless or hostile client sends.
    fn odd_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!(null)),
            Just(json!(-1)),
            Just(json!(0)),
            Just(json!(1e38)),
            Just(json!(-1e308)),
            Just(json!(1_000_000_000_000_i64)),
            Just(json!(u64::MAX)),
            Just(json!("")),
            Just(json!("<|im_start|>")),
            Just(json!([])),
            Just(json!({})),
            Just(json!({"49152": 5, "x": 1})),
            Just(json!([{"role": "user"}])),
            Just(json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])),
            Just(json!([{"type": "function", "function": {"name": ""}}])),
            Just(json!({"type": "function", "function": {"name": "f"}})),
            Just(json!({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}})),
            Just(json!({"type": "json_object"})),
            Just(json!("required")),
            any::<f64>().prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            ".{0,8}".prop_map(|s| json!(s)),
        ]
    }

    const FIELDS: [&str; 31] = [
        "messages",
        "prompt",
        "model",
        "stream",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "context_overflow",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "grammar",
        "regex",
        "json_schema",
        "chat_template_kwargs",
        "reasoning_budget",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any mix of odd fields parses or is refused with a 4xx; nothing panics.
        #[test]
        fn any_body_is_accepted_or_refused_cleanly(
            fields in proptest::collection::vec((0..FIELDS.len(), odd_value()), 0..8),
            chat in any::<bool>(),
        ) {
            let mut body = if chat {
                json!({"messages": [{"role": "user", "content": "hi"}]})
            } else {
                json!({"prompt": "hi"})
            };
            for (i, v) in fields {
                body[FIELDS[i]] = v;
            }
            let bytes = serde_json::to_vec(&body).unwrap();
            if let Err(e) = check_body(chat, &bytes, 49152, 4096) {
                prop_assert!(e.status.is_client_error(), "{body}: {e:?}");
            }
        }

        /// Arbitrary bytes: never a panic.
        #[test]
        fn any_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256), chat in any::<bool>()) {
            let _ = check_body(chat, &bytes, 49152, 4096);
        }
    }
}
