//! Chat templates: the model file's Jinja template (`tokenizer.chat_template`)
//! rendered with `minijinja`, or a built-in template for known families when
//! the file has none (the Gemma 3 GGUF has none).

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

use crate::TextError;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl Message {
    /// A message with the given role and text.
    #[must_use]
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.to_owned(), content: content.to_owned() }
    }
}

/// Gemma's turn format (as published with Gemma 3): system text is folded
/// into the first user turn, the assistant role is called `model`.
const GEMMA_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}\
{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}\
{%- for message in loop_messages -%}{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + (message['content'] | trim) + '<end_of_turn>\n' }}\
{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

/// ChatML, the fallback for files without a template.
const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}\
{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// Where the template came from (`file` or the built-in family name).
    pub source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("source", &self.source).finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The file's template if it has one, else a built-in for `arch`.
    pub fn for_model(file_template: Option<&str>, arch: &str, bos: &str, eos: &str) -> Result<Self, TextError> {
        let (src, source) = match file_template {
            Some(t) => (t.to_owned(), "file".to_owned()),
            None if arch.starts_with("gemma") => (GEMMA_TEMPLATE.to_owned(), "built-in gemma".to_owned()),
            None => (CHATML_TEMPLATE.to_owned(), "built-in chatml".to_owned()),
        };
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |_fmt: String| -> String {
            // Templates use this for a "today is" line; a fixed, local-only answer
            // keeps rendering deterministic.
            String::new()
        });
        env.add_template_owned("chat", src).map_err(|e| TextError::Template(e.to_string()))?;
        Ok(Self { env, bos: bos.to_owned(), eos: eos.to_owned(), source })
    }

    /// Renders `messages`, ending with the assistant prompt when asked.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TextError> {
        let tmpl = self.env.get_template("chat").map_err(|e| TextError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| TextError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_builtin_folds_system_into_user() {
        let t = ChatTemplate::for_model(None, "gemma3", "<bos>", "<eos>").unwrap();
        let s = t.render(&[Message::new("system", "Be brief."), Message::new("user", "Hi")], true).unwrap();
        assert_eq!(s, "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::for_model(None, "llama", "", "").unwrap();
        let s = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::for_model(Some("{{ raise_exception('no') }}"), "llama", "", "").unwrap();
        assert!(t.render(&[], false).is_err());
    }
}
