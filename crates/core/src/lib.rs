//! Shared vocabulary of Hearth: newtype ids, the ggml tensor type table and the
//! batch description every model forward pass consumes.
//!
//! Invariant: this crate has no dependencies on other Hearth crates; everything
//! else points down to it.

mod batch;
mod ggml_type;

pub use batch::{ForwardBatch, SeqId, TokenId};
pub use ggml_type::{GgmlType, UnknownGgmlType};
