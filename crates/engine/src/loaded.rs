//! A loaded model with its tokenizer and chat template: immutable once
//! loaded. How it runs (context, KV type, batch sizes) is an
//! [`EngineConfig`] that every entry point takes, so a flag means the same
//! thing to `run`, `serve`, `perplexity` and `bench`.

use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use hearth_constrain::{Constraint, ConstraintError, Grammars, Guide};
use hearth_core::Backend;
use hearth_core::TokenId;
use hearth_gguf::{GgufFile, MetaValue};
use hearth_models::lora::LoraAdapter;
use hearth_models::{Model, SequenceCache};
use hearth_text::{ChatExtras, ChatTemplate, Message, Tokenizer};

use crate::batching::EngineConfig;
use crate::EngineError;

/// Everything needed to turn text into text with one model.
pub struct LoadedModel {
    /// The network.
    pub model: Box<dyn Model>,
    /// Its vocabulary (shared with the constraint compiler).
    pub tokenizer: Arc<Tokenizer>,
    /// Its chat format.
    pub template: ChatTemplate,
    /// The parsed file (metadata for `show`).
    pub file: GgufFile,
    /// Where it was loaded from.
    pub path: std::path::PathBuf,
    /// The vocabulary as the constraint compiler sees it, built on the first
    /// constrained request (a large vocabulary's trie costs tens of ms).
    grammars: OnceLock<Result<Grammars, ConstraintError>>,
    /// The backend the model computes on (adapters are prepared for it).
    backend: Arc<dyn Backend>,
    /// LoRA adapters loaded for this model, by name, in load order (a
    /// request may name one by its place, as llama-server's `lora` ids do):
    /// chosen per request, applied per sequence inside the batch (never merged).
    adapters: RwLock<Vec<(String, Arc<LoraAdapter>)>>,
}

impl LoadedModel {
    /// Loads `path` onto `backend` (models sharing a backend share its threads).
    pub fn load(path: &Path, backend: Arc<dyn Backend>) -> Result<Self, EngineError> {
        Self::load_with_template(path, backend, None)
    }

    /// As [`LoadedModel::load`], with the chat template's Jinja source given
    /// by the caller (`--chat-template-file`) instead of the file's. A
    /// template that cannot render a plain user/assistant/user conversation
    /// is refused here, at load, rather than at the first request; the
    /// file's own template only earns a warning (raw prompts still work).
    pub fn load_with_template(
        path: &Path,
        backend: Arc<dyn Backend>,
        template: Option<&str>,
    ) -> Result<Self, EngineError> {
        let file =
            GgufFile::open(path).map_err(|reason| EngineError::Load { path: path.display().to_string(), reason })?;
        // Tokenizer and template come from the metadata alone: a bad one is
        // refused before seconds of weight loading.
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let piece = |id: Option<u32>| id.and_then(|t| tokenizer.token_text(t)).unwrap_or("").to_owned();
        let given = template.is_some();
        let source = template.or_else(|| file.get("tokenizer.chat_template").and_then(MetaValue::as_str));
        let arch = file.get_str("general.architecture").map_err(hearth_models::ModelError::from)?;
        let template = ChatTemplate::for_model(source, arch, &piece(tokenizer.bos), &piece(tokenizer.eos))?;
        let probe = [Message::new("user", "Hi"), Message::new("assistant", "Hello."), Message::new("user", "Bye")];
        if let Err(e) = template.render(&probe, true) {
            if given {
                return Err(EngineError::Invalid(format!(
                    "the chat template does not render a user/assistant/user conversation: {e}"
                )));
            }
            tracing::warn!("{}: the file's chat template does not render a simple conversation: {e}", path.display());
        }
        tracing::info!("backend: {}", backend.describe());
        let model = hearth_models::load(file.clone(), Arc::clone(&backend))?;
        file.release_pages();
        Ok(Self {
            model,
            tokenizer: Arc::new(tokenizer),
            template,
            file,
            path: path.to_path_buf(),
            grammars: OnceLock::new(),
            backend,
            adapters: RwLock::default(),
        })
    }

    /// Loads the LoRA adapter at `path` for this model as `name` (replacing
    /// one of that name: requests already running keep theirs). An adapter
    /// for another base — another architecture, or matrices of other
    /// shapes — is refused, naming the mismatch.
    pub fn load_adapter(&self, name: &str, path: &Path) -> Result<Arc<LoraAdapter>, EngineError> {
        if name.is_empty() || name.contains(':') {
            return Err(EngineError::Invalid(format!("adapter name {name:?}: give a name without ':'")));
        }
        let adapter = Arc::new(LoraAdapter::load(name, path, &self.file, self.backend.as_ref())?);
        // A poisoned lock only means a panic elsewhere mid-insert: the map is still whole.
        let mut adapters = self.adapters.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match adapters.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = Arc::clone(&adapter),
            None => adapters.push((name.to_owned(), Arc::clone(&adapter))),
        }
        Ok(adapter)
    }

    /// The adapter loaded as `name`.
    #[must_use]
    pub fn adapter(&self, name: &str) -> Option<Arc<LoraAdapter>> {
        let adapters = self.adapters.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        adapters.iter().find(|(n, _)| n == name).map(|(_, a)| Arc::clone(a))
    }

    /// Every adapter loaded, by name, in load order.
    #[must_use]
    pub fn adapters(&self) -> Vec<(String, Arc<LoraAdapter>)> {
        self.adapters.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
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
        self.chat_prompt_with(messages, &ChatExtras::default())
    }

    /// As [`LoadedModel::chat_prompt`], with tools and template variables.
    /// Tool definitions, past calls' arguments and variables are rendered as
    /// markup the template writes, not as message text, so one holding a
    /// control token's text is refused (it would forge a turn).
    pub fn chat_prompt_with(&self, messages: &[Message], extras: &ChatExtras) -> Result<Vec<TokenId>, EngineError> {
        let forged = |what: &str, text: &str| {
            if self.tokenizer.contains_control_text(text) {
                Err(EngineError::Invalid(format!("{what} contains the text of a control token; remove it")))
            } else {
                Ok(())
            }
        };
        if let Some(tools) = &extras.tools {
            forged("tools", &tools.to_string())?;
        }
        forged("chat_template_kwargs", &serde_json::Value::Object(extras.kwargs.clone()).to_string())?;
        for (i, m) in messages.iter().enumerate() {
            if let Some(calls) = &m.tool_calls {
                forged(&format!("messages[{i}].tool_calls"), &serde_json::to_string(calls).unwrap_or_default())?;
            }
            for field in [&m.tool_call_id, &m.name].into_iter().flatten() {
                forged(&format!("messages[{i}]"), field)?;
            }
        }
        let chat = self.template.render_prompt(messages, extras)?;
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

    /// Compiles `constraint` for this model's vocabulary into a fresh guide
    /// for one sequence. An unusable schema or grammar is an error naming
    /// the problem, before any token is generated.
    pub fn guide(&self, constraint: &Constraint) -> Result<Guide, EngineError> {
        let grammars = self.grammars.get_or_init(|| Grammars::new(Arc::clone(&self.tokenizer)));
        Ok(grammars.as_ref().map_err(Clone::clone)?.compile(constraint)?)
    }

    /// The context the model was trained with.
    #[must_use]
    pub fn trained_context(&self) -> usize {
        self.model.config().n_ctx_train
    }

    /// A fresh single-sequence KV cache of `config`'s context and element type.
    pub fn new_cache(&self, config: &EngineConfig) -> Result<SequenceCache, EngineError> {
        Ok(SequenceCache::new(self.model.config(), config.kv_type, config.n_ctx)?)
    }
}
