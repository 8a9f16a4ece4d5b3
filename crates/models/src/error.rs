use hearth_core::{BackendError, GgmlType};
use hearth_gguf::GgufError;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("architecture {0:?} is not supported (supported: {list})", list = crate::SUPPORTED_ARCHITECTURES.join(", "))]
    UnsupportedArch(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("metadata: {0}")]
    BadMetadata(String),
    #[error("tensor {name:?} missing from the model file")]
    MissingTensor { name: String },
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    BadShape { name: String, found: Vec<u64>, expected: Vec<u64> },
    #[error("tensor {name:?} has type {ty}, which this backend cannot compute with")]
    UnsupportedType { name: String, ty: GgmlType },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("invalid batch: {0}")]
    BadBatch(String),
    #[error("{0} models do not give embeddings yet (llama, qwen, deepseek2 and bitnet files do)")]
    NoEmbeddings(String),
    #[error("LoRA adapter {0}")]
    BadAdapter(String),
    #[error("{0} models do not take LoRA adapters yet (llama, qwen, deepseek2, bitnet and gemma3 files do)")]
    NoAdapters(String),
    #[error("sequence would exceed the context size ({limit} tokens)")]
    ContextFull { limit: usize },
}
