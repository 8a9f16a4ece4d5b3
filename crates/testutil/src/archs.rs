//! Tiny random dense decoders of the architectures that are Llama's blocks
//! with a twist (SmolLM3's NoPE layers, Granite's multipliers, Gemma 2's
//! soft-capping and post-norms, Phi-3's fused matrices): each checked
//! against llama.cpp's logits on the same file
//! (`fixtures/llamacpp/tiny_models.json`).

use hearth_core::GgmlType;
use hearth_gguf::MetaValue;

use crate::{Gen, TINY_LLAMA};

/// The models [`tiny_dense`] writes: architectures, and two `llama` files
/// with RoPE scaling — Llama 3's per-frequency factors (`rope_freqs`) and
/// YaRN past a 16-token original context.
pub const TINY_DENSE_ARCHS: [&str; 7] =
    ["smollm3", "granite", "gemma2", "phi3", "mistral3", "llama-rope-freqs", "llama-yarn"];

/// A tiny random model `name` (one of [`TINY_DENSE_ARCHS`]) of
/// [`TINY_LLAMA`]'s shape, matrices in Q8_0, the embedding in F32.
///
/// # Panics
/// For other names.
#[must_use]
pub fn tiny_dense(name: &str, seed: u64) -> Vec<u8> {
    assert!(TINY_DENSE_ARCHS.contains(&name), "tiny_dense: {name}");
    let arch = if name.starts_with("llama") { "llama" } else { name };
    let s = TINY_LLAMA;
    let mut g = Gen::with_metadata(arch, s, seed);
    let k = |name: &str| format!("{arch}.{name}");
    // llama.cpp changes token attributes for files *named* like Phi-3 and
    // then needs Phi-3's own tokens; the byte vocabulary has none.
    g.set("general.name", MetaValue::String("hearth tiny dense".into()));
    match name {
        "llama-rope-freqs" => {
            // Llama 3's low-frequency stretch: divisors from 1 (fast pairs) to 8 (slow).
            let factors: Vec<f32> = (0..s.head_dim / 2).map(|i| 1.0 + 7.0 * (i as f32 / (s.head_dim / 2 - 1) as f32).powi(2)).collect();
            g.f32_tensor("rope_freqs.weight", &[factors.len() as u64], &factors);
            g.set(&k("rope.freq_base"), MetaValue::F32(500_000.0));
        }
        "llama-yarn" => {
            g.set(&k("rope.scaling.type"), MetaValue::String("yarn".into()));
            g.set(&k("rope.scaling.factor"), MetaValue::F32(4.0));
            g.set(&k("rope.scaling.original_context_length"), MetaValue::U32(16));
        }
        "mistral3" => {
            // Query temperature steps every 4 positions of an original 4-token context.
            g.set(&k("attention.temperature_scale"), MetaValue::F32(0.1));
            g.set(&k("rope.scaling.original_context_length"), MetaValue::U32(4));
        }
        "granite" => {
            g.set(&k("embedding_scale"), MetaValue::F32(4.0));
            g.set(&k("residual_scale"), MetaValue::F32(0.5));
            g.set(&k("attention.scale"), MetaValue::F32(0.1));
            g.set(&k("logit_scale"), MetaValue::F32(2.0));
        }
        "gemma2" => {
            // A window shorter than the 32-token test prompt, so it matters.
            g.set(&k("attention.sliding_window"), MetaValue::U32(8));
            g.set(&k("attn_logit_softcapping"), MetaValue::F32(50.0));
            g.set(&k("final_logit_softcapping"), MetaValue::F32(30.0));
        }
        _ => {}
    }
    let (q_dim, kv_dim) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    // Gemma 2's head is its embedding: smaller values keep its logits off
    // the soft cap (a saturated tanh would hide differences).
    let emb = g.values(s.n_vocab * s.n_embd, if arch == "gemma2" { 0.2 } else { 1.0 });
    g.f32_tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], &emb);
    let w = 1.5 / (s.n_embd as f32).sqrt();
    let ty = GgmlType::Q8_0;
    for il in 0..s.n_layer {
        let p = |n: &str| format!("blk.{il}.{n}");
        g.norm(&p("attn_norm.weight"), s.n_embd);
        if arch == "phi3" {
            g.matrix(&p("attn_qkv.weight"), q_dim + 2 * kv_dim, s.n_embd, ty, w);
        } else {
            g.matrix(&p("attn_q.weight"), q_dim, s.n_embd, ty, w);
            g.matrix(&p("attn_k.weight"), kv_dim, s.n_embd, ty, w);
            g.matrix(&p("attn_v.weight"), kv_dim, s.n_embd, ty, w);
        }
        g.matrix(&p("attn_output.weight"), s.n_embd, q_dim, ty, w);
        if arch == "gemma2" {
            g.norm(&p("post_attention_norm.weight"), s.n_embd);
        }
        g.norm(&p("ffn_norm.weight"), s.n_embd);
        if arch == "phi3" {
            // Gate rows first, then up rows (llama.cpp's `swiglu` halves).
            g.matrix(&p("ffn_up.weight"), 2 * s.n_ff, s.n_embd, ty, w);
        } else {
            g.matrix(&p("ffn_gate.weight"), s.n_ff, s.n_embd, ty, w);
            g.matrix(&p("ffn_up.weight"), s.n_ff, s.n_embd, ty, w);
        }
        g.matrix(&p("ffn_down.weight"), s.n_embd, s.n_ff, ty, w);
        if arch == "gemma2" {
            g.norm(&p("post_ffw_norm.weight"), s.n_embd);
        }
    }
    g.norm("output_norm.weight", s.n_embd);
    // Gemma 2 ties its head to the embedding.
    if arch != "gemma2" {
        g.matrix("output.weight", s.n_vocab, s.n_embd, ty, 4.0 * w);
    }
    g.w.to_bytes()
}

/// A tiny random `gpt-oss` model: [`TINY_LLAMA`]'s attention (Q/K/V and
/// output biases, sink logits), 8 experts of 64 in MXFP4 with biases, 2 per
/// token, F32 router with a bias; sliding window 8 on even layers; YaRN
/// (factor 4 past a 16-token original context) as gpt-oss's files have it.
#[must_use]
pub fn tiny_gpt_oss(seed: u64) -> Vec<u8> {
    gpt_oss(TINY_LLAMA, [8, 2, 64], 8, (4.0, 16), seed)
}

/// gpt-oss-20b's shape (hidden 2880, 64 query heads and 8 KV heads of 64,
/// 32 experts of 2880, 4 per token, vocabulary 201088) with `n_layer` of
/// its 24 layers: the realistic shape for speed figures, MXFP4 experts as
/// OpenAI ships them, Q8_0 elsewhere. About 0.45 GB per layer plus 1.2 GB.
#[must_use]
pub fn gpt_oss_20b_like(n_layer: usize, seed: u64) -> Vec<u8> {
    let s = crate::TinyShape { n_embd: 2880, n_head: 64, n_kv_head: 8, head_dim: 64, n_ff: 2880, n_layer, n_vocab: 201_088 };
    gpt_oss(s, [32, 4, 2880], 128, (32.0, 4096), seed)
}

/// A random `gpt-oss` of shape `s`, `experts` = [count, used, size], a
/// sliding window, and YaRN (factor, original context).
fn gpt_oss(s: crate::TinyShape, experts: [usize; 3], window: u32, yarn: (f32, u32), seed: u64) -> Vec<u8> {
    let arch = "gpt-oss";
    let [n_expert, n_used, n_ff] = experts;
    let mut g = Gen::with_metadata(arch, s, seed);
    let k = |name: &str| format!("{arch}.{name}");
    g.set("general.name", MetaValue::String("hearth tiny dense".into()));
    for (name, v) in [("expert_count", n_expert), ("expert_used_count", n_used), ("expert_feed_forward_length", n_ff)] {
        g.set(&k(name), MetaValue::U32(v as u32));
    }
    g.set(&k("attention.sliding_window"), MetaValue::U32(window));
    g.set(&k("rope.freq_base"), MetaValue::F32(150_000.0));
    g.set(&k("rope.scaling.type"), MetaValue::String("yarn".into()));
    g.set(&k("rope.scaling.factor"), MetaValue::F32(yarn.0));
    g.set(&k("rope.scaling.original_context_length"), MetaValue::U32(yarn.1));
    let (q_dim, kv_dim) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    let big = s.n_vocab * s.n_embd > 1 << 20;
    if big {
        g.tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], GgmlType::Q8_0, 1.0);
        g.set(&k("context_length"), MetaValue::U32(131_072));
        g.set("general.name", MetaValue::String(format!("hearth random gpt-oss-20b-like, {} layers", s.n_layer)));
    } else {
        let emb = g.values(s.n_vocab * s.n_embd, 1.0);
        g.f32_tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], &emb);
    }
    let w = 1.5 / (s.n_embd as f32).sqrt();
    let bias = |g: &mut Gen, name: String, dims: &[u64]| {
        let v = g.values(dims.iter().product::<u64>() as usize, 0.2);
        g.f32_tensor(&name, dims, &v);
    };
    for il in 0..s.n_layer {
        let p = |n: &str| format!("blk.{il}.{n}");
        g.norm(&p("attn_norm.weight"), s.n_embd);
        for (name, rows) in [("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)] {
            g.matrix(&p(&format!("{name}.weight")), rows, s.n_embd, GgmlType::Q8_0, w);
            bias(&mut g, p(&format!("{name}.bias")), &[rows as u64]);
        }
        g.matrix(&p("attn_output.weight"), s.n_embd, q_dim, GgmlType::Q8_0, w);
        bias(&mut g, p("attn_output.bias"), &[s.n_embd as u64]);
        let sinks = g.values(s.n_head, 2.0);
        g.f32_tensor(&p("attn_sinks.weight"), &[s.n_head as u64], &sinks);
        g.norm(&p("post_attention_norm.weight"), s.n_embd);
        let router = g.values(n_expert * s.n_embd, w);
        g.f32_tensor(&p("ffn_gate_inp.weight"), &[s.n_embd as u64, n_expert as u64], &router);
        bias(&mut g, p("ffn_gate_inp.bias"), &[n_expert as u64]);
        g.experts(&p("ffn_gate_exps.weight"), n_expert, n_ff, s.n_embd, GgmlType::MXFP4, w);
        g.experts(&p("ffn_up_exps.weight"), n_expert, n_ff, s.n_embd, GgmlType::MXFP4, w);
        g.experts(&p("ffn_down_exps.weight"), n_expert, s.n_embd, n_ff, GgmlType::MXFP4, 2.0 / (n_ff as f32).sqrt());
        bias(&mut g, p("ffn_gate_exps.bias"), &[n_ff as u64, n_expert as u64]);
        bias(&mut g, p("ffn_up_exps.bias"), &[n_ff as u64, n_expert as u64]);
        bias(&mut g, p("ffn_down_exps.bias"), &[s.n_embd as u64, n_expert as u64]);
    }
    g.norm("output_norm.weight", s.n_embd);
    g.matrix("output.weight", s.n_vocab, s.n_embd, GgmlType::Q8_0, 4.0 * w);
    g.w.to_bytes()
}
