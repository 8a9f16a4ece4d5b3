//! Random LoRA adapters in llama.cpp's GGUF adapter format, for a real base
//! model: `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, and per adapted matrix `<name>.lora_a` (ggml dims
//! `[n_in, rank]`) and `<name>.lora_b` (`[rank, n_out]`), both F32 — what
//! `convert_lora_to_gguf.py` writes, read by `llama-server --lora` and
//! `hearth serve --lora` alike.

use std::path::Path;

use hearth_core::GgmlType;
use hearth_gguf::{GgufFile, GgufWriter, MetaValue};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The matrices a LoRA usually adapts: attention and feed-forward.
pub const LORA_TARGETS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// A random adapter of `rank` on `targets` of every block of the model at
/// `base`, scaled `alpha / rank` as llama.cpp applies it. `A` is uniform in
/// ±1/√n_in (its products are about unit size), `B` in ±`strength`/√rank,
/// so `strength` sets how far the adapter moves each matrix's output.
///
/// # Panics
/// When `base` cannot be read or lacks a targeted matrix (a test's mistake).
#[must_use]
pub fn lora_adapter(base: &Path, seed: u64, rank: usize, alpha: f32, strength: f32, targets: &[&str]) -> Vec<u8> {
    let file = GgufFile::open(base).expect("base model readable"); // ok: a test helper over the tests' own files (# Panics)
    let arch = file.get_str("general.architecture").expect("architecture").to_owned(); // ok: as above
    let n_layer = file.get_u64(&format!("{arch}.block_count")).expect("block count") as usize; // ok: as above
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String(arch));
    w.set("general.type", MetaValue::String("adapter".into()));
    w.set("general.name", MetaValue::String(format!("hearth random lora {seed}")));
    w.set("adapter.type", MetaValue::String("lora".into()));
    w.set("adapter.lora.alpha", MetaValue::F32(alpha));
    let mut f32_tensor = |w: &mut GgufWriter, name: &str, dims: [u64; 2], bound: f32| {
        let n = (dims[0] * dims[1]) as usize;
        let bytes = (0..n).flat_map(|_| rng.gen_range(-bound..bound).to_le_bytes()).collect();
        w.add_tensor(name, &dims, GgmlType::F32, bytes);
    };
    for il in 0..n_layer {
        for t in targets {
            let name = format!("blk.{il}.{t}.weight");
            let info = file.tensor(&name).unwrap_or_else(|| panic!("base has no {name}"));
            let (n_in, n_out) = (info.dims[0], info.dims[1]);
            f32_tensor(&mut w, &format!("{name}.lora_a"), [n_in, rank as u64], 1.0 / (n_in as f32).sqrt());
            f32_tensor(&mut w, &format!("{name}.lora_b"), [rank as u64, n_out], strength / (rank as f32).sqrt());
        }
    }
    w.to_bytes()
}

/// The adapters the tests use on SmolLM2: (name, seed, rank, alpha).
pub const TEST_ADAPTERS: [(&str, u64, usize, f32); 2] = [("legal", 7, 8, 16.0), ("style", 11, 16, 16.0)];

/// How far the test adapters move each matrix (see [`lora_adapter`]).
pub const TEST_ADAPTER_STRENGTH: f32 = 0.25;
