//! The engine: load a model file into a ready [`LoadedModel`] (weights, tokenizer,
//! chat template), generate text, compute perplexity, and find or fetch
//! models through the [`catalog`].

pub mod batching;
pub mod bench;
pub mod embed;
mod error;
mod generate;
pub mod handle;
mod loaded;
pub mod metrics;
pub mod perplexity;
pub mod plan;
pub mod registry;
pub mod router;

pub use error::EngineError;
pub use generate::{FinishReason, GenerateOutput};
pub use hearth_constrain::{Constraint, ConstraintError, Guide};
/// Constrained decoding (grammars, schemas, forced tool calls).
pub use hearth_constrain as constraint;
pub use hearth_models::lora::LoraAdapter;
pub use loaded::LoadedModel;
