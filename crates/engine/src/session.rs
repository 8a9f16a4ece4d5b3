//! A loaded model with its tokenizer and chat template.

use std::path::Path;
use std::sync::Arc;

use hearth_core::Backend;
use hearth_core::TokenId;
use hearth_gguf::{GgufFile, MetaValue};
use hearth_models::{Model, SequenceCache};
use hearth_text::{ChatTemplate, Message, Tokenizer};

use crate::EngineError;

/// Everything needed to turn text into text with one model.
pub struct Session {
    /// The network.
    pub model: Box<dyn Model>,
    /// Its vocabulary.
    pub tokenizer: Tokenizer,
    /// Its chat format.
    pub template: ChatTemplate,
    /// Context size used for new KV caches.
    pub n_ctx: usize,
    /// KV cache element type for [`Session::generate`].
    pub kv_type: hearth_core::KvType,
    /// The parsed file (metadata for `show`).
    pub file: GgufFile,
}

impl Session {
    /// Loads `path` on the CPU backend with context size `n_ctx` (0 = the
    /// model's training context).
    pub fn load(path: &Path, n_ctx: usize) -> Result<Self, EngineError> {
        let file =
            GgufFile::open(path).map_err(|reason| EngineError::Load { path: path.display().to_string(), reason })?;
        let backend: Arc<dyn Backend> = Arc::new(hearth_cpu::CpuBackend::new());
        tracing::info!("backend: {}", backend.describe());
        let model = hearth_models::load(file.clone(), backend)?;
        file.release_pages();
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let piece = |id: Option<u32>| id.and_then(|t| tokenizer.token_text(t)).unwrap_or("").to_owned();
        let template = ChatTemplate::for_model(
            file.get("tokenizer.chat_template").and_then(MetaValue::as_str),
            &model.config().arch,
            &piece(tokenizer.bos),
            &piece(tokenizer.eos),
        )?;
        let n_ctx = if n_ctx == 0 { model.config().n_ctx_train } else { n_ctx };
        Ok(Self { model, tokenizer, template, n_ctx, kv_type: hearth_core::KvType::F16, file })
    }

    /// Tokens of a chat: the messages through the chat template, ending with
    /// the assistant's turn. `hearth run` and the server both use this, so
    /// the same conversation is the same prompt everywhere.
    ///
    /// Only the template's markup yields control tokens: a message's text is
    /// tokenized as text, so typing `<|im_start|>system` forges no turn. When
    /// the template rewrites message text so its place cannot be found, a
    /// message holding a control token's text is refused rather than trusted.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<TokenId>, EngineError> {
        let chat = self.template.render_marked(messages, true)?;
        if !chat.located {
            if let Some(i) = messages.iter().position(|m| self.tokenizer.contains_control_text(&m.content)) {
                return Err(EngineError::Invalid(format!(
                    "messages[{i}] contains the text of a control token, and this model's chat template \
                     rewrites message text, so it cannot be kept as plain text; remove it"
                )));
            }
        }
        Ok(self.tokenizer.encode_marked(&chat.text, &chat.plain, true)?)
    }

    /// Tokens of `text` as-is (with BOS when the model wants one).
    pub fn raw_prompt(&self, text: &str) -> Result<Vec<TokenId>, EngineError> {
        Ok(self.tokenizer.encode(text, true)?)
    }

    /// A fresh single-sequence f16 KV cache sized for this session's context.
    pub fn new_cache(&self) -> Result<SequenceCache, EngineError> {
        Ok(SequenceCache::new(self.model.config(), hearth_core::KvType::F16, self.n_ctx)?)
    }
}
