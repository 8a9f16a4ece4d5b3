//! Qwen2 and Qwen3. Both are Llama-shaped decoders with NeoX-style RoPE;
//! Qwen2 adds biases to Q/K/V, Qwen3 drops them and RMS-normalizes each
//! query and key head before RoPE. The shared [`Attention`](crate::layers::Attention)
//! picks both up from the tensors present, so the blocks are Llama's.
//! `qwen2moe` / `qwen3moe` are the same with mixture-of-experts FFNs (see
//! [`llama::load`]).

use std::sync::Arc;

use hearth_core::{Backend, RopeStyle};
use hearth_gguf::GgufFile;

use crate::decoder::Decoder;
use crate::{llama, ModelError};

/// Loads a `qwen2`, `qwen3`, `qwen2moe` or `qwen3moe` model.
pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Decoder, ModelError> {
    llama::load(file, backend, RopeStyle::NeoX)
}
