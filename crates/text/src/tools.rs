//! Tool calling, the text side: how tools reach the model (through a chat
//! template that renders `tools`, else a system message Hearth writes), which
//! format the model answers in, and finding the calls in its output. The
//! grammar that forces a call lives with the other constraints
//! (`hearth-constrain`).

use serde_json::{json, Value};

use crate::chat::{ChatTemplate, Message};

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Its name (`[A-Za-z0-9_-]{1,64}`, OpenAI's rule).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its arguments' JSON schema (an object schema).
    pub parameters: Value,
}

impl ToolSpec {
    /// The OpenAI shape (`{"type": "function", "function": {…}}`), as
    /// templates and Hearth's own tool prompt show it.
    #[must_use]
    pub fn to_openai(&self) -> Value {
        let mut f = json!({"name": self.name, "parameters": self.parameters});
        if let Some(d) = &self.description {
            f["description"] = json!(d);
        }
        json!({"type": "function", "function": f})
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (free text or calls).
    #[default]
    Auto,
    /// No calls: tools are not shown.
    None,
    /// At least one call, of any tool.
    Required,
    /// A call of this function.
    Named(String),
}

/// How a model writes its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Hermes, Qwen).
    Hermes,
    /// A bare `{"name": …, "parameters": {…}}` (Llama 3.1+).
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": {…}}]` (Mistral).
    Mistral,
    /// The template does not know tools: Hermes's syntax, taught by the
    /// system message Hearth writes.
    Generic,
}

/// Opens a call in the Hermes and generic formats.
pub const CALL_OPEN: &str = "<tool_call>";
/// Closes it.
pub const CALL_CLOSE: &str = "</tool_call>";

impl ToolFormat {
    /// The format `template` teaches its model, from the markup it writes.
    #[must_use]
    pub fn of(template: &ChatTemplate) -> Self {
        let src = template.jinja();
        if !template.knows_tools() {
            Self::Generic
        } else if src.contains("[TOOL_CALLS]") {
            Self::Mistral
        } else if src.contains(CALL_OPEN) {
            Self::Hermes
        } else if src.contains("<|python_tag|>") || src.contains("ipython") {
            Self::Llama3
        } else {
            Self::Hermes
        }
    }

    /// The key that holds a call's arguments in this format.
    #[must_use]
    pub fn arguments_key(self) -> &'static str {
        if self == Self::Llama3 {
            "parameters"
        } else {
            "arguments"
        }
    }

    /// Whether calls start with [`CALL_OPEN`] (else the whole reply is JSON).
    #[must_use]
    pub fn tagged(self) -> bool {
        matches!(self, Self::Hermes | Self::Generic)
    }
}

/// The system message that teaches a model without a tool-aware template
/// to call tools (the generic format).
#[must_use]
pub fn generic_tool_prompt(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "You can call functions. Their signatures are inside <tools></tools>:\n<tools>\n",
    );
    for t in tools {
        s.push_str(&t.to_openai().to_string());
        s.push('\n');
    }
    s.push_str(
        "</tools>\nTo call a function, reply with only this, one block per call:\n<tool_call>\n\
         {\"name\": <function name>, \"arguments\": <arguments as a JSON object>}\n</tool_call>\n\
         Function results come back inside <tool_response></tool_response>. \
         When no call is needed, answer normally.",
    );
    s
}

/// The messages the template sees. For a template that knows tools they are
/// unchanged (it renders `tools`, `tool_calls` and `tool` turns itself). For
/// one that does not, the tools are described in the system message, past
/// calls are written out in the generic format and tool results become user
/// turns wrapped in `<tool_response>`.
#[must_use]
pub fn prepare_messages(messages: &[Message], tools: &[ToolSpec], format: ToolFormat) -> Vec<Message> {
    if format != ToolFormat::Generic {
        return messages.to_vec();
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let prompt = generic_tool_prompt(tools);
        match messages.first() {
            Some(m) if m.role == "system" => {
                out.push(Message::new("system", &format!("{}\n\n{prompt}", m.content)));
            }
            _ => out.push(Message::new("system", &prompt)),
        }
    }
    let skip = usize::from(!tools.is_empty() && messages.first().is_some_and(|m| m.role == "system"));
    for m in &messages[skip..] {
        match (m.role.as_str(), &m.tool_calls) {
            ("assistant", Some(calls)) => {
                let mut text = m.content.clone();
                for c in calls {
                    let call = json!({"name": c.function.name, "arguments": c.function.arguments});
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(CALL_OPEN);
                    text.push('\n');
                    text.push_str(&call.to_string());
                    text.push('\n');
                    text.push_str(CALL_CLOSE);
                }
                out.push(Message::new("assistant", &text));
            }
            ("tool", _) => {
                out.push(Message::new("user", &format!("<tool_response>\n{}\n</tool_response>", m.content)));
            }
            _ => out.push(Message::new(&m.role, &m.content)),
        }
    }
    out
}

/// A reply split into its text and its calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedReply {
    /// Text outside the calls (trimmed; `None` when empty).
    pub content: Option<String>,
    /// `(name, arguments)` of each call, in order.
    pub calls: Vec<(String, Value)>,
}

/// Finds the calls in `text` written in `format`. A call counts only if it
/// names one of `tools` and its arguments are a JSON object; anything else
/// stays text, so a reply is never lost.
#[must_use]
pub fn parse_reply(text: &str, format: ToolFormat, tools: &[ToolSpec]) -> ParsedReply {
    let known = |name: &str| tools.iter().any(|t| t.name == name);
    let call_of = |v: &Value| -> Option<(String, Value)> {
        let name = v.get("name")?.as_str()?;
        let args = v.get("arguments").or_else(|| v.get("parameters")).cloned().unwrap_or_else(|| json!({}));
        // Some models write the arguments as a JSON string.
        let args = match args {
            Value::String(s) => serde_json::from_str(&s).ok()?,
            other => other,
        };
        (known(name) && args.is_object()).then(|| (name.to_owned(), args))
    };
    let content = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    if format.tagged() {
        let (mut calls, mut rest) = (Vec::new(), String::new());
        let mut tail = text;
        while let Some(open) = tail.find(CALL_OPEN) {
            let body_start = open + CALL_OPEN.len();
            let (body, next) = match tail[body_start..].find(CALL_CLOSE) {
                Some(close) => (&tail[body_start..body_start + close], body_start + close + CALL_CLOSE.len()),
                None => (&tail[body_start..], tail.len()),
            };
            let unterminated = next == tail.len() && !tail[body_start..].contains(CALL_CLOSE);
            match serde_json::from_str::<Value>(body.trim()).ok().as_ref().and_then(call_of) {
                Some(call) => {
                    rest.push_str(&tail[..open]);
                    // The same call twice is a model repeating itself; run once.
                    if !calls.contains(&call) {
                        calls.push(call);
                    }
                }
                // A call cut off by max_tokens after others is no text.
                None if unterminated && !calls.is_empty() => rest.push_str(&tail[..open]),
                None => rest.push_str(&tail[..next]),
            }
            tail = &tail[next..];
        }
        rest.push_str(tail);
        return ParsedReply { content: content(&rest), calls };
    }
    // JSON formats: the whole reply is one call or a list of calls.
    let trimmed = text.trim();
    let calls: Option<Vec<(String, Value)>> = match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Array(items)) if !items.is_empty() => items.iter().map(call_of).collect(),
        Ok(v @ Value::Object(_)) => call_of(&v).map(|c| vec![c]),
        _ => None,
    };
    match calls {
        Some(calls) => ParsedReply { content: None, calls },
        None => ParsedReply { content: content(text), calls: Vec::new() },
    }
}

/// Where streamed text can go out as content: the length of `text`'s
/// prefix that cannot be (the start of) a call. Hermes-style calls may
/// follow text; a JSON-format reply is a call only if it starts with JSON.
#[must_use]
pub fn safe_prefix(text: &str, format: ToolFormat) -> usize {
    if format.tagged() {
        if let Some(open) = text.find(CALL_OPEN) {
            return open;
        }
        // Hold back a tail that may grow into the opening tag.
        let keep = (1..CALL_OPEN.len()).rev().find(|&k| text.ends_with(&CALL_OPEN[..k])).unwrap_or(0);
        return text.len() - keep;
    }
    let start = text.trim_start();
    if start.is_empty() || start.starts_with(['{', '[']) {
        0
    } else {
        text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }]
    }

    #[test]
    fn hermes_calls_are_found_between_text() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
        let r = parse_reply(text, ToolFormat::Hermes, &weather());
        assert_eq!(r.content.as_deref(), Some("Let me check."));
        assert_eq!(r.calls, vec![("get_weather".to_owned(), json!({"city": "Oslo"}))]);
    }

    #[test]
    fn unknown_tools_and_bad_json_stay_text() {
        let text = "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>";
        let r = parse_reply(text, ToolFormat::Generic, &weather());
        assert!(r.calls.is_empty());
        assert_eq!(r.content.as_deref(), Some(text));
        let r = parse_reply("<tool_call>{oops", ToolFormat::Generic, &weather());
        assert!(r.calls.is_empty());
    }

    #[test]
    fn repeated_calls_run_once_and_a_cut_off_call_is_dropped() {
        let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
        let text = format!("{call}\n{call}\n<tool_call>\n{{\"name\":");
        let r = parse_reply(&text, ToolFormat::Generic, &weather());
        assert_eq!((r.calls.len(), r.content), (1, None));
    }

    #[test]
    fn json_formats_parse_whole_replies() {
        let r = parse_reply(r#"{"name": "get_weather", "parameters": {"city": "Rome"}}"#, ToolFormat::Llama3, &weather());
        assert_eq!(r.calls.len(), 1);
        let r = parse_reply(r#"[{"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}]"#, ToolFormat::Mistral, &weather());
        assert_eq!(r.calls, vec![("get_weather".to_owned(), json!({"city": "Rome"}))]);
        let r = parse_reply("It is sunny.", ToolFormat::Llama3, &weather());
        assert_eq!((r.content.as_deref(), r.calls.len()), (Some("It is sunny."), 0));
    }

    #[test]
    fn streaming_holds_back_what_may_become_a_call() {
        assert_eq!(safe_prefix("Sure <tool_", ToolFormat::Hermes), 5);
        assert_eq!(safe_prefix("Sure <tool_call>{", ToolFormat::Hermes), 5);
        assert_eq!(safe_prefix("Sure", ToolFormat::Hermes), 4);
        assert_eq!(safe_prefix("  {\"na", ToolFormat::Llama3), 0);
        assert_eq!(safe_prefix("Hello", ToolFormat::Llama3), 5);
    }

    #[test]
    fn generic_format_rewrites_history_for_templates_without_tools() {
        let mut call = Message::new("assistant", "");
        call.tool_calls = Some(vec![crate::ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: crate::FunctionCall { name: "get_weather".into(), arguments: json!({"city": "Oslo"}) },
        }]);
        let mut result = Message::new("tool", "12 C");
        result.tool_call_id = Some("call_1".into());
        let msgs = [Message::new("user", "Weather?"), call, result];
        let out = prepare_messages(&msgs, &weather(), ToolFormat::Generic);
        assert_eq!(out[0].role, "system");
        assert!(out[0].content.contains("get_weather"));
        assert!(out[2].content.starts_with(CALL_OPEN));
        assert_eq!((out[3].role.as_str(), out[3].content.as_str()), ("user", "<tool_response>\n12 C\n</tool_response>"));
    }
}
