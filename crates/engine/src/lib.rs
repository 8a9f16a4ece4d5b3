//! The engine: load a model file into a ready [`Session`] (weights, tokenizer,
//! chat template), generate text, compute perplexity, and find or fetch
//! models through the [`catalog`].

pub mod batching;
pub mod bench;
pub mod catalog;
mod error;
mod generate;
pub mod handle;
pub mod metrics;
pub mod perplexity;
pub mod plan;
mod session;

pub use error::EngineError;
pub use generate::{FinishReason, GenerateOutput};
pub use session::Session;
