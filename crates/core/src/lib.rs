//! Shared vocabulary of Hearth: newtype ids, the ggml tensor type table, the
//! batch description every model forward pass consumes and the backend
//! boundary that kernels sit behind.
//!
//! Invariant: this crate has no dependencies on other Hearth crates; everything
//! else points down to it.

mod backend;
mod batch;
mod ggml_type;
mod kv;

pub use backend::reference as encoder_reference;
pub use backend::{
    Activation, AttentionShape, Backend, BackendError, MatmulJob, PackedQkv, PreparedWeight, RopeParams, RopeStyle,
    WeightView,
};
pub use batch::{ForwardBatch, SeqId, TokenId};
pub use ggml_type::{GgmlType, UnknownGgmlType};
pub use kv::{AttentionSpan, BlockId, KvData, KvDataMut, KvLayer, KvType};
