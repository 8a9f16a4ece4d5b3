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

/// A token count as people write it: `4096`, `32k`, `1m` (k = 1024, m =
/// 1024²), case-insensitive; none when it is not one (or is zero).
#[must_use]
pub fn parse_token_count(s: &str) -> Option<usize> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.strip_suffix('k') {
        Some(n) => (n, 1024),
        None => match t.strip_suffix('m') {
            Some(n) => (n, 1024 * 1024),
            None => (t.as_str(), 1),
        },
    };
    num.parse::<usize>().ok()?.checked_mul(mult).filter(|&v| v > 0)
}
