//! BitNet b1.58 (`bitnet` in llama.cpp): a Llama-shaped decoder whose
//! matrices are ternary (TQ1_0 / TQ2_0) with an optional f32 scale per
//! matrix, and two extra norms: one on the attention output before `wo`,
//! one on the gated FFN activations before `down`. RoPE pairs halves (NeoX);
//! the LM head is the embedding table.
//!
//! ```text
//! x = embed(tokens)
//! for each block:
//!     x += wo·s_o(sub_norm_a(attn(rms_norm(x))))
//!     x += down·s_d(sub_norm_f(silu(gate·s_g(h)) * up·s_u(h)))   with h = rms_norm(x)
//! logits = embed(rms_norm(x))
//! ```
//! (llama.cpp's `src/models/bitnet.cpp`; its FFN is SiLU-gated.) Microsoft's
//! BitNet b1.58 2B-4T, converted by bitnet.cpp as `bitnet-b1.58` (or
//! `bitnet-25`), gates with `relu(x)²` instead; everything else is the same.
//! Only the blocks differ from Llama's, so the graph is Llama's with these
//! blocks; per-tensor scales are applied by every matmul that has one.

use std::sync::Arc;

use hearth_core::{Activation, Backend, RopeStyle};
use hearth_gguf::GgufFile;

use crate::decoder::{Block, Decoder};
use crate::layers::{Attention, Ffn, GatedMlp, RmsNorm};
use crate::ModelError;

/// Loads a `bitnet`, `bitnet-b1.58` or `bitnet-25` GGUF.
pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Decoder, ModelError> {
    Decoder::load_with_blocks(file, backend, RopeStyle::NeoX, |w, cfg, il| {
        let act = if cfg.arch == "bitnet" { Activation::Silu } else { Activation::ReluSquared };
        let p = |s: &str| format!("blk.{il}.{s}");
        let norm = |name: &str, dim| RmsNorm::load(w, &p(name), dim, cfg.norm_eps);
        Ok(Block {
            attn_norm: norm("attn_norm.weight", cfg.n_embd)?,
            attn: Box::new(
                Attention::load(w, cfg, il)?.with_sub_norm(norm("attn_sub_norm.weight", cfg.n_head * cfg.head_dim)?),
            ),
            ffn_norm: norm("ffn_norm.weight", cfg.n_embd)?,
            ffn: Ffn::Dense(GatedMlp::load(w, cfg, il, act)?.with_sub_norm(norm("ffn_sub_norm.weight", cfg.n_ff)?)),
        })
    })
}
