//! `POST /v1/chat/completions`: messages, tools and how the prompt ends.

use hearth_text::{FunctionCall, Message, ToolCall, ToolChoice, ToolSpec};
use serde::Deserialize;

use super::sampling::{Sampling, MAX_TOP_LOGPROBS};
use crate::error::ApiError;

/// Message content: a string or a list of typed parts (only text parts are read).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": "..."}, ...]`.
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part message.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// Part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// What was said (absent for pure tool-call turns).
    pub content: Option<Content>,
    /// The calls an assistant turn made.
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// The call a `tool` turn answers.
    pub tool_call_id: Option<String>,
    /// The tool's (or participant's) name.
    pub name: Option<String>,
}

/// A call in an assistant message the client sends back.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallIn {
    /// The call's id.
    pub id: Option<String>,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// What was called.
    pub function: FunctionIn,
}

/// The function of a [`ToolCallIn`].
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionIn {
    /// The function's name.
    pub name: String,
    /// The arguments: a JSON text (OpenAI's shape) or an object.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// The tools of a chat request, checked.
#[derive(Debug, Clone, Default)]
pub struct ToolSetup {
    /// The functions offered.
    pub specs: Vec<ToolSpec>,
    /// Whether and which to call.
    pub choice: ToolChoice,
    /// Several calls in one reply allowed.
    pub parallel: bool,
}

impl ToolSetup {
    /// Whether the model is shown tools and its reply is parsed for calls.
    #[must_use]
    pub fn active(&self) -> bool {
        !self.specs.is_empty() && self.choice != ToolChoice::None
    }
}

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 128;

/// Most messages in one chat (OpenAI's bound is 2,048; truncation still
/// renders the template over them, so they are bounded).
pub const MAX_MESSAGES: usize = 8192;
/// Roles a chat message may have.
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// `auto`, `none`, `required` or `{"type": "function", "function": {"name": …}}`.
    pub tool_choice: Option<serde_json::Value>,
    /// Allow several calls in one reply (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Legacy `tool_choice`: `auto`, `none` or `{"name": …}`.
    pub function_call: Option<serde_json::Value>,
    /// More variables for the chat template (e.g. `{"enable_thinking": false}`).
    #[serde(default)]
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// End the prompt with the assistant's opening (default true; vLLM's and
    /// llama-server's extension).
    pub add_generation_prompt: Option<bool>,
    /// Continue the last message, an assistant's, instead of answering it.
    #[serde(default)]
    pub continue_final_message: bool,
    /// Most tokens a reasoning model may think before its answer (extension;
    /// the close is forced when they run out).
    pub reasoning_budget: Option<usize>,
    /// Return log-probabilities.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token (with `logprobs`).
    pub top_logprobs: Option<usize>,
    /// Shared fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl ChatRequest {
    /// How the prompt ends; asking for both a new turn and the last one
    /// continued is a 400.
    pub fn ending(&self) -> Result<hearth_text::ChatEnding, ApiError> {
        use hearth_text::ChatEnding;
        match (self.add_generation_prompt, self.continue_final_message) {
            (Some(true), true) => Err(ApiError::invalid(
                "continue_final_message",
                "continue_final_message and add_generation_prompt cannot both be true",
            )),
            (_, true) => Ok(ChatEnding::ContinueLast),
            (Some(false), false) => Ok(ChatEnding::Bare),
            (None | Some(true), false) => Ok(ChatEnding::GenerationPrompt),
        }
    }

    /// The offered tools and the choice among them, checked: each a
    /// `function` with a valid, unique name and an object schema for its
    /// parameters; a required or named choice needs tools (and the name
    /// one of them). Whether each schema compiles is checked when the
    /// request's grammar is built.
    pub fn tools(&self) -> Result<ToolSetup, ApiError> {
        let mut specs = Vec::new();
        let (list, param, legacy) = match (&self.sampling.tools, &self.sampling.functions) {
            (Some(t), _) if !t.is_null() => (t, "tools", false),
            (_, Some(f)) if !f.is_null() => (f, "functions", true),
            _ => (&serde_json::Value::Null, "tools", false),
        };
        if !list.is_null() {
            let Some(items) = list.as_array() else { return Err(ApiError::invalid(param, format!("{param} must be a list"))) };
            if items.len() > MAX_TOOLS {
                return Err(ApiError::invalid(param, format!("at most {MAX_TOOLS} tools per request")));
            }
            for (i, item) in items.iter().enumerate() {
                let at = format!("{param}[{i}]");
                let f = if legacy {
                    item
                } else {
                    if item.get("type").and_then(serde_json::Value::as_str) != Some("function") {
                        return Err(ApiError::invalid(&format!("{at}.type"), "only tools of type \"function\" are supported"));
                    }
                    item.get("function").ok_or_else(|| ApiError::invalid(&format!("{at}.function"), "a tool needs a function"))?
                };
                let name = f.get("name").and_then(serde_json::Value::as_str).unwrap_or("");
                if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(ApiError::invalid(&format!("{at}.name"), format!("function name {name:?} must be 1-64 characters of a-z, A-Z, 0-9, _ and -")));
                }
                if specs.iter().any(|s: &ToolSpec| s.name == name) {
                    return Err(ApiError::invalid(&format!("{at}.name"), format!("function {name:?} is offered twice")));
                }
                let parameters = match f.get("parameters") {
                    None | Some(serde_json::Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
                    Some(p @ serde_json::Value::Object(_)) => p.clone(),
                    Some(_) => return Err(ApiError::invalid(&format!("{at}.parameters"), "parameters must be a JSON schema object")),
                };
                let description = f.get("description").and_then(serde_json::Value::as_str).map(str::to_owned);
                specs.push(ToolSpec { name: name.to_owned(), description, parameters });
            }
        }
        let (choice_value, choice_param) = match (&self.tool_choice, &self.function_call) {
            (Some(c), _) if !c.is_null() => (Some(c), "tool_choice"),
            (_, Some(c)) if !c.is_null() => (Some(c), "function_call"),
            _ => (None, "tool_choice"),
        };
        let choice = match choice_value {
            None => ToolChoice::Auto,
            Some(serde_json::Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => return Err(ApiError::invalid(choice_param, format!("{choice_param} {other:?} is not one of auto, none, required or a function"))),
            },
            Some(v) => {
                let name = v.get("function").and_then(|f| f.get("name")).or_else(|| v.get("name")).and_then(serde_json::Value::as_str);
                let Some(name) = name else {
                    return Err(ApiError::invalid(choice_param, format!("{choice_param} must name a function: {{\"type\": \"function\", \"function\": {{\"name\": …}}}}")));
                };
                if !specs.iter().any(|s| s.name == name) {
                    return Err(ApiError::invalid(choice_param, format!("{choice_param} names {name:?}, which is not among the tools")));
                }
                ToolChoice::Named(name.to_owned())
            }
        };
        if specs.is_empty() && choice == ToolChoice::Required {
            return Err(ApiError::invalid(choice_param, "tool_choice \"required\" needs tools"));
        }
        let setup = ToolSetup { specs, choice, parallel: self.parallel_tool_calls.unwrap_or(true) };
        if setup.active() && self.sampling.constraint()?.is_some() {
            return Err(ApiError::invalid(
                "response_format",
                "a response format or grammar cannot be combined with tools (use tool_choice \"none\", or describe the format as a tool)",
            ));
        }
        Ok(setup)
    }

    /// The messages as the template sees them.
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(ApiError::invalid("messages", format!("at most {MAX_MESSAGES} messages per request")));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !ROLES.contains(&m.role.as_str()) {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].role"),
                        format!("role {:?} is not one of {}", m.role, ROLES.join(", ")),
                    ));
                }
                let text = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::invalid(
                                        &format!("messages[{i}].content"),
                                        format!("content part type {kind:?} is not supported (text only)"),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                let role = if m.role == "developer" { "system" } else { m.role.as_str() };
                let mut msg = Message::new(role, &text);
                msg.name.clone_from(&m.name);
                if let Some(calls) = &m.tool_calls {
                    if m.role != "assistant" {
                        return Err(ApiError::invalid(&format!("messages[{i}].tool_calls"), "only assistant messages carry tool_calls"));
                    }
                    msg.tool_calls = Some(tool_calls_of(i, calls)?);
                }
                if m.role == "tool" {
                    let Some(id) = &m.tool_call_id else {
                        return Err(ApiError::invalid(&format!("messages[{i}].tool_call_id"), "a tool message needs the tool_call_id it answers"));
                    };
                    msg.tool_call_id = Some(id.clone());
                }
                Ok(msg)
            })
            .collect::<Result<Vec<Message>, ApiError>>()
            .and_then(check_tool_answers)
    }

    /// Alternatives per token, or `None` without logprobs.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        let top = self.top_logprobs.unwrap_or(0);
        if top > MAX_TOP_LOGPROBS {
            return Err(ApiError::invalid("top_logprobs", format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}")));
        }
        if self.top_logprobs.is_some() && !self.logprobs {
            return Err(ApiError::invalid("top_logprobs", "top_logprobs needs logprobs: true"));
        }
        Ok(self.logprobs.then_some(top))
    }
}

/// A message's calls in the template's shape: ids kept (or made up), the
/// arguments parsed into the JSON object they must be.
fn tool_calls_of(i: usize, calls: &[ToolCallIn]) -> Result<Vec<ToolCall>, ApiError> {
    calls
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("messages[{i}].tool_calls[{j}]");
            if c.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(ApiError::invalid(&format!("{at}.type"), "only function calls are supported"));
            }
            let arguments = match &c.function.arguments {
                serde_json::Value::String(s) if s.trim().is_empty() => serde_json::json!({}),
                serde_json::Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| ApiError::invalid(&format!("{at}.function.arguments"), format!("arguments are not JSON: {e}")))?,
                serde_json::Value::Null => serde_json::json!({}),
                other => other.clone(),
            };
            if !arguments.is_object() {
                return Err(ApiError::invalid(&format!("{at}.function.arguments"), "arguments must be a JSON object"));
            }
            let id = c.id.clone().unwrap_or_else(|| format!("call_{i}_{j}"));
            Ok(ToolCall { id, kind: "function".into(), function: FunctionCall { name: c.function.name.clone(), arguments } })
        })
        .collect()
}

/// Every `tool` message must answer a call made by an earlier assistant turn.
fn check_tool_answers(messages: Vec<Message>) -> Result<Vec<Message>, ApiError> {
    let mut calls: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if let Some(cs) = &m.tool_calls {
            calls.extend(cs.iter().map(|c| c.id.as_str()));
        }
        if let Some(id) = &m.tool_call_id {
            if !calls.contains(&id.as_str()) {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].tool_call_id"),
                    format!("tool_call_id {id:?} answers no call of an earlier assistant message"),
                ));
            }
        }
    }
    Ok(messages)
}
