//! Text in and out of a model: a tokenizer built from the GGUF vocabulary on
//! the `tokenizers` crate, UTF-8-safe streaming detokenization, and chat
//! templates rendered with `minijinja`.

mod chat;
mod decoder;
mod encoder_tokenizer;
mod pretokenize;
pub mod reasoning;
mod tokenizer;
pub mod tools;

pub use chat::{builtin_template, ChatEnding, ChatExtras, ChatTemplate, FunctionCall, Message, RenderedChat, ToolCall, BUILTIN_TEMPLATES};
pub use tools::{ToolChoice, ToolFormat, ToolSpec};
pub use decoder::IncrementalDecoder;
pub use encoder_tokenizer::EncoderTokenizer;
pub use tokenizer::{TextError, Tokenizer, TokenizerKind};
