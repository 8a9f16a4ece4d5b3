//! Deterministic tiny random-weight models, written as GGUF with
//! `hearth-gguf`'s writer. The same seed gives byte-identical files, so
//! outputs recorded once from llama.cpp on these files stay valid.
//! [`real_model`] is the one way tests fetch the real small models.

mod archs;
mod encoder;
mod lora;
mod real;
pub use archs::{gpt_oss_20b_like, tiny_dense, tiny_gpt_oss, TINY_DENSE_ARCHS};
pub use encoder::{write_tiny_cross_encoder, write_tiny_nomic_bert, CE_VOCAB};
pub use lora::{lora_adapter, LORA_TARGETS, TEST_ADAPTERS, TEST_ADAPTER_STRENGTH};
pub use real::{catalog, cpu_backend, real_model};

use hearth_core::GgmlType;
use hearth_gguf::{GgufWriter, MetaValue, MetaValueType};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shape of a tiny test model.
#[derive(Debug, Clone, Copy)]
pub struct TinyShape {
    /// Hidden size.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Head size.
    pub head_dim: usize,
    /// Feed-forward size.
    pub n_ff: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Vocabulary (byte-level, at most 256).
    pub n_vocab: usize,
}

/// The shape used by the architecture tests.
pub const TINY: TinyShape =
    TinyShape { n_embd: 64, n_head: 4, n_kv_head: 2, head_dim: 16, n_ff: 128, n_layer: 2, n_vocab: 256 };

struct Gen {
    rng: ChaCha8Rng,
    w: GgufWriter,
}

impl Gen {
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.gen_range(-scale..scale)).collect()
    }

    fn f32_tensor(&mut self, name: &str, dims: &[u64], values: &[f32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.w.add_tensor(name, dims, GgmlType::F32, bytes);
    }

    /// A `rows × cols` matrix in `ty` (F32, F16, Q8_0 or Q4_K).
    fn matrix(&mut self, name: &str, rows: usize, cols: usize, ty: GgmlType, scale: f32) {
        self.tensor(name, &[cols as u64, rows as u64], ty, scale);
    }

    /// `n_expert` experts' `rows × cols` matrices as one 3-D tensor.
    fn experts(&mut self, name: &str, n_expert: usize, rows: usize, cols: usize, ty: GgmlType, scale: f32) {
        self.tensor(name, &[cols as u64, rows as u64, n_expert as u64], ty, scale);
    }

    /// Random values of about ±`scale` in `ty` (F32, F16, Q8_0; Q4_K and
    /// Q4_0 as random blocks whose scales give that range, fast at any size;
    /// TQ2_0 as ±`scale` or 0).
    fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, scale: f32) {
        let n = dims.iter().product::<u64>() as usize;
        let bytes = match ty {
            GgmlType::Q4_K => self.q4_k_blocks(n, scale),
            GgmlType::Q4_0 => self.q4_0_blocks(n, scale),
            GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_NL
            | GgmlType::IQ4_XS
            | GgmlType::MXFP4 => self.random_blocks(ty, n, scale),
            GgmlType::TQ2_0 => {
                use hearth_cpu::kernels::ternary::{encode_tq2_0, QK};
                let codes: Vec<u8> = (0..n).map(|_| self.rng.gen_range(0..3u8)).collect();
                codes.chunks_exact(QK).flat_map(|c| encode_tq2_0(c, scale)).collect()
            }
            GgmlType::F16 => self.values(n, scale).iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
            GgmlType::Q8_0 => hearth_cpu::kernels::reference::quantize_q8_0(&self.values(n, scale)),
            _ => self.values(n, scale).iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        self.w.add_tensor(name, dims, ty, bytes);
    }

    /// `n` elements of random `Q4_K` blocks (random codes and 6-bit
    /// sub-scales) with super-block scales fixed so values span about
    /// ±`scale`: fast to make at any size, and valid for every reader.
    fn q4_k_blocks(&mut self, n: usize, scale: f32) -> Vec<u8> {
        // code·d·sc − dmin·m with codes ≤ 15 and sc, m ≤ 63.
        self.q4_k_blocks_with(n, 2.0 * scale / (15.0 * 63.0), scale / 63.0)
    }

    /// `n` elements of random `Q4_0` blocks spanning about ±`scale`.
    fn q4_0_blocks(&mut self, n: usize, scale: f32) -> Vec<u8> {
        let mut bytes = vec![0u8; n / 32 * GgmlType::Q4_0.type_size()];
        self.rng.fill_bytes(&mut bytes);
        for block in bytes.chunks_exact_mut(GgmlType::Q4_0.type_size()) {
            block[0..2].copy_from_slice(&half::f16::from_f32(scale / 8.0).to_le_bytes());
        }
        bytes
    }

    /// `n` elements of random blocks of `ty`: random bytes, then each
    /// block's f16 scale fields set so values span about ±`scale` (the
    /// largest code times the largest sub-block factor gives `scale`).
    /// Every bit pattern of the other fields is a valid block.
    fn random_blocks(&mut self, ty: GgmlType, n: usize, scale: f32) -> Vec<u8> {
        use GgmlType as T;
        // (byte offset, value) of each f16 field, by the type's layout in ggml-common.h.
        let fields: &[(usize, f32)] = match ty {
            T::Q4_1 => &[(0, scale / 8.0), (2, -scale)],
            T::Q5_0 => &[(0, scale / 16.0)],
            T::Q5_1 => &[(0, scale / 16.0), (2, -scale)],
            T::Q2_K => &[(80, 2.0 * scale / (3.0 * 15.0)), (82, scale / 15.0)],
            T::Q3_K => &[(108, scale / 128.0)],
            T::Q5_K => &[(0, 2.0 * scale / (31.0 * 63.0)), (2, scale / 63.0)],
            T::Q6_K => &[(208, scale / 4096.0)],
            T::IQ4_NL => &[(0, scale / 127.0)],
            T::IQ4_XS => &[(0, scale / (32.0 * 127.0))],
            T::MXFP4 => &[],
            _ => unreachable!("random_blocks: {ty:?}"),
        };
        // MXFP4's scale is an exponent byte: the power of two nearest
        // scale / 12 (its largest doubled value), i.e. 2^(e − 128) ≈ scale / 12.
        let mxfp4_e = ((scale / 12.0).log2().round() + 128.0).clamp(2.0, 254.0) as u8;
        let size = ty.type_size();
        let mut bytes = vec![0u8; n / ty.block_size() * size];
        self.rng.fill_bytes(&mut bytes);
        for block in bytes.chunks_exact_mut(size) {
            for &(at, v) in fields {
                block[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
            if ty == T::MXFP4 {
                block[0] = mxfp4_e;
            }
        }
        bytes
    }

    /// Random `Q4_K` blocks with super-block scales `d` and `dmin`.
    fn q4_k_blocks_with(&mut self, n: usize, d: f32, dmin: f32) -> Vec<u8> {
        let mut bytes = vec![0u8; n / 256 * GgmlType::Q4_K.type_size()];
        self.rng.fill_bytes(&mut bytes);
        for block in bytes.chunks_exact_mut(GgmlType::Q4_K.type_size()) {
            block[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
            block[2..4].copy_from_slice(&half::f16::from_f32(dmin).to_le_bytes());
        }
        bytes
    }

    fn norm(&mut self, name: &str, n: usize) {
        let v: Vec<f32> = (0..n).map(|_| self.rng.gen_range(0.8..1.2)).collect();
        self.f32_tensor(name, &[n as u64], &v);
    }

    fn set(&mut self, key: &str, v: MetaValue) {
        self.w.set(key, v);
    }

    /// A writer holding the hyperparameters of `shape` under `arch` and a
    /// byte-level vocabulary.
    fn with_metadata(arch: &str, s: TinyShape, seed: u64) -> Self {
        let mut g = Gen { rng: ChaCha8Rng::seed_from_u64(seed), w: GgufWriter::new() };
        let k = |name: &str| format!("{arch}.{name}");
        g.set("general.architecture", MetaValue::String(arch.into()));
        g.set("general.name", MetaValue::String(format!("hearth tiny {arch}")));
        g.set(&k("context_length"), MetaValue::U32(256));
        g.set(&k("embedding_length"), MetaValue::U32(s.n_embd as u32));
        g.set(&k("feed_forward_length"), MetaValue::U32(s.n_ff as u32));
        g.set(&k("block_count"), MetaValue::U32(s.n_layer as u32));
        g.set(&k("attention.head_count"), MetaValue::U32(s.n_head as u32));
        g.set(&k("attention.head_count_kv"), MetaValue::U32(s.n_kv_head as u32));
        g.set(&k("attention.key_length"), MetaValue::U32(s.head_dim as u32));
        g.set(&k("attention.value_length"), MetaValue::U32(s.head_dim as u32));
        g.set(&k("rope.freq_base"), MetaValue::F32(10_000.0));
        g.set(&k("attention.layer_norm_rms_epsilon"), MetaValue::F32(1e-6));
        g.set("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
        g.set("tokenizer.ggml.pre", MetaValue::String("qwen2".into()));
        g.set("tokenizer.ggml.tokens", MetaValue::Array(MetaValueType::String, byte_tokens(s.n_vocab)));
        g.set("tokenizer.ggml.token_type", MetaValue::Array(MetaValueType::I32, vec![MetaValue::I32(1); s.n_vocab]));
        g.set("tokenizer.ggml.merges", MetaValue::Array(MetaValueType::String, Vec::new()));
        g.set("tokenizer.ggml.bos_token_id", MetaValue::U32(0));
        g.set("tokenizer.ggml.eos_token_id", MetaValue::U32(1));
        g.set("tokenizer.ggml.add_bos_token", MetaValue::Bool(false));
        g
    }

    /// A `rows × cols` ternary matrix in `ty`: codes drawn with zero as
    /// likely as ±1 (BitNet's weights are about a third zeros), one scale for
    /// the whole tensor as BitNet's absmean gives, and a per-tensor
    /// `<stem>.scale` beside it. `TQ1_0`/`TQ2_0` store the scale per block
    /// (f16), `I2_S` once per tensor (the same f16-rounded value, so its
    /// results equal `TQ2_0`'s), `Q4_0` as exact nibbles 7..9 and `Q8_0` as
    /// quantized values (same-shape comparisons).
    fn ternary_matrix(&mut self, stem: &str, rows: usize, cols: usize, ty: GgmlType) {
        use hearth_cpu::kernels::ternary::{encode_i2_s, encode_tq1_0, encode_tq2_0, QK};
        let d = self.rng.gen_range(0.5..1.5) / (cols as f32).sqrt();
        let codes: Vec<u8> = (0..rows * cols).map(|_| self.rng.gen_range(0..3u8)).collect();
        let bytes = match ty {
            GgmlType::TQ1_0 => codes.chunks_exact(QK).flat_map(|c| encode_tq1_0(c, d)).collect(),
            GgmlType::TQ2_0 => codes.chunks_exact(QK).flat_map(|c| encode_tq2_0(c, d)).collect(),
            GgmlType::I2_S => encode_i2_s(&codes, half::f16::from_f32(d).to_f32()),
            GgmlType::Q4_0 => codes.chunks_exact(32).flat_map(|c| ternary_q4_0_block(c, d)).collect(),
            _ => {
                let v: Vec<f32> = codes.iter().map(|&c| (f32::from(c) - 1.0) * d).collect();
                hearth_cpu::kernels::reference::quantize_q8_0(&v)
            }
        };
        self.w.add_tensor(&format!("{stem}.weight"), &[cols as u64, rows as u64], ty, bytes);
        let scale = self.rng.gen_range(0.5..1.5);
        self.f32_tensor(&format!("{stem}.scale"), &[1], &[scale]);
    }
}

/// 32 ternary codes as one exact `Q4_0` block: scale `d`, nibbles `code + 7`
/// (element `j` in the low nibble of byte `j`, element `j + 16` in the high).
fn ternary_q4_0_block(codes: &[u8], d: f32) -> Vec<u8> {
    let mut b = half::f16::from_f32(d).to_le_bytes().to_vec();
    b.extend((0..16).map(|j| (codes[j] + 7) | ((codes[j + 16] + 7) << 4)));
    b
}

/// GPT-2's byte alphabet as one-character tokens: a valid byte-level BPE
/// vocabulary with no merges; beyond 256, unreachable filler tokens `tok<i>`.
fn byte_tokens(n: usize) -> Vec<MetaValue> {
    let printable = |b: u32| (33..=126).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut next = 256u32;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            MetaValue::String(char::from_u32(c).unwrap_or('?').to_string())
        })
        .chain((256..).map(|i| MetaValue::String(format!("tok{i}"))))
        .take(n)
        .collect()
}

/// A tiny random `qwen2` (Q/K/V biases) or `qwen3` (per-head Q/K norms) model.
///
/// # Panics
/// For architectures other than `qwen2` and `qwen3`.
#[must_use]
pub fn tiny_qwen(arch: &str, seed: u64) -> Vec<u8> {
    assert!(arch == "qwen2" || arch == "qwen3", "tiny_qwen: {arch}");
    let s = TINY;
    let mut g = Gen::with_metadata(arch, s, seed);
    let (q_dim, kv_dim) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    let emb = g.values(s.n_vocab * s.n_embd, 1.0);
    g.f32_tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], &emb);
    for il in 0..s.n_layer {
        let p = |n: &str| format!("blk.{il}.{n}");
        g.norm(&p("attn_norm.weight"), s.n_embd);
        g.matrix(&p("attn_q.weight"), q_dim, s.n_embd, GgmlType::Q8_0, 0.25);
        g.matrix(&p("attn_k.weight"), kv_dim, s.n_embd, GgmlType::Q8_0, 0.25);
        g.matrix(&p("attn_v.weight"), kv_dim, s.n_embd, GgmlType::F16, 0.25);
        g.matrix(&p("attn_output.weight"), s.n_embd, q_dim, GgmlType::Q8_0, 0.25);
        if arch == "qwen2" {
            for (name, n) in [("attn_q.bias", q_dim), ("attn_k.bias", kv_dim), ("attn_v.bias", kv_dim)] {
                let b = g.values(n, 0.5);
                g.f32_tensor(&p(name), &[n as u64], &b);
            }
        } else {
            g.norm(&p("attn_q_norm.weight"), s.head_dim);
            g.norm(&p("attn_k_norm.weight"), s.head_dim);
        }
        g.norm(&p("ffn_norm.weight"), s.n_embd);
        g.matrix(&p("ffn_gate.weight"), s.n_ff, s.n_embd, GgmlType::Q8_0, 0.25);
        g.matrix(&p("ffn_up.weight"), s.n_ff, s.n_embd, GgmlType::Q8_0, 0.25);
        g.matrix(&p("ffn_down.weight"), s.n_embd, s.n_ff, GgmlType::F32, 0.2);
    }
    g.norm("output_norm.weight", s.n_embd);
    g.matrix("output.weight", s.n_vocab, s.n_embd, GgmlType::Q8_0, 0.5);
    g.w.to_bytes()
}

/// The shape of the tiny dense `llama` models of every block type (K-quant
/// and IQ rows need multiples of 256 columns).
pub const TINY_LLAMA: TinyShape =
    TinyShape { n_embd: 256, n_head: 4, n_kv_head: 2, head_dim: 64, n_ff: 512, n_layer: 2, n_vocab: 256 };

/// A tiny random dense `llama` model with every matrix (LM head included)
/// in `ty` — random blocks, see `Gen::random_blocks` — and an F32
/// embedding: the test of one weight type's float order against llama.cpp.
#[must_use]
pub fn tiny_llama(ty: GgmlType, seed: u64) -> Vec<u8> {
    let s = TINY_LLAMA;
    let mut g = Gen::with_metadata("llama", s, seed);
    g.set("llama.rope.dimension_count", MetaValue::U32(s.head_dim as u32));
    let emb = g.values(s.n_vocab * s.n_embd, 1.0);
    g.f32_tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], &emb);
    // Scales keep activations of order one through two layers of 256–512 inputs.
    let w = 1.5 / (s.n_embd as f32).sqrt();
    llama_blocks(&mut g, s, ty, w, w);
    g.norm("output_norm.weight", s.n_embd);
    g.matrix("output.weight", s.n_vocab, s.n_embd, ty, 4.0 * w);
    g.w.to_bytes()
}

/// The block types [`tiny_llama`] is recorded in (`fixtures/llamacpp/quant_types.json`).
pub const TINY_LLAMA_TYPES: [GgmlType; 13] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
];

/// Llama 3.2 1B's shape (1.2 billion weights, tied embedding): the dense
/// model for per-type speed figures.
pub const LLAMA32_1B: TinyShape =
    TinyShape { n_embd: 2048, n_head: 32, n_kv_head: 8, head_dim: 64, n_ff: 8192, n_layer: 16, n_vocab: 128_256 };

/// A random dense `llama` of shape `s` with every matrix and the (tied)
/// embedding in `ty` — random blocks for block types, seconds to make at
/// any size; for speed figures of one weight type beside llama.cpp.
#[must_use]
pub fn llama_like(s: TinyShape, ty: GgmlType, seed: u64) -> Vec<u8> {
    let mut g = Gen::with_metadata("llama", s, seed);
    g.set("llama.context_length", MetaValue::U32(4096));
    g.set("llama.rope.freq_base", MetaValue::F32(500_000.0));
    g.set("general.name", MetaValue::String(format!("hearth random llama-like {ty}")));
    g.tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], ty, 1.0);
    llama_blocks(&mut g, s, ty, 1.5 / (s.n_embd as f32).sqrt(), 1.5 / (s.n_ff as f32).sqrt());
    g.norm("output_norm.weight", s.n_embd);
    g.w.to_bytes()
}

/// The blocks of a dense `llama` of shape `s`, every matrix in `ty` with
/// values of about ±`w` (`w_down` for the down projection).
fn llama_blocks(g: &mut Gen, s: TinyShape, ty: GgmlType, w: f32, w_down: f32) {
    let (q_dim, kv_dim) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    for il in 0..s.n_layer {
        let p = |n: &str| format!("blk.{il}.{n}");
        g.norm(&p("attn_norm.weight"), s.n_embd);
        g.matrix(&p("attn_q.weight"), q_dim, s.n_embd, ty, w);
        g.matrix(&p("attn_k.weight"), kv_dim, s.n_embd, ty, w);
        g.matrix(&p("attn_v.weight"), kv_dim, s.n_embd, ty, w);
        g.matrix(&p("attn_output.weight"), s.n_embd, q_dim, ty, w);
        g.norm(&p("ffn_norm.weight"), s.n_embd);
        g.matrix(&p("ffn_gate.weight"), s.n_ff, s.n_embd, ty, w);
        g.matrix(&p("ffn_up.weight"), s.n_ff, s.n_embd, ty, w);
        g.matrix(&p("ffn_down.weight"), s.n_embd, s.n_ff, ty, w_down);
    }
}

/// The shape of the tiny BitNet (ternary rows need multiples of 256 columns).
pub const TINY_BITNET: TinyShape =
    TinyShape { n_embd: 256, n_head: 4, n_kv_head: 2, head_dim: 64, n_ff: 512, n_layer: 2, n_vocab: 256 };

/// A tiny random `bitnet` model with every matrix in `ty` (see
/// `ternary_matrix`), per-tensor scales and sub-norms, F16 embeddings tied
/// to the LM head.
#[must_use]
pub fn tiny_bitnet(ty: GgmlType, seed: u64) -> Vec<u8> {
    tiny_bitnet_as("bitnet", ty, seed)
}

/// [`tiny_bitnet`] under another architecture name (`bitnet-b1.58`: the
/// squared-ReLU variant).
#[must_use]
pub fn tiny_bitnet_as(arch: &str, ty: GgmlType, seed: u64) -> Vec<u8> {
    let s = TINY_BITNET;
    let mut g = Gen::with_metadata(arch, s, seed);
    let emb = g.values(s.n_vocab * s.n_embd, 1.0);
    let emb: Vec<u8> = emb.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect();
    g.w.add_tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], GgmlType::F16, emb);
    bitnet_blocks(&mut g, s, ty);
    g.w.to_bytes()
}

/// The shape of Microsoft's BitNet b1.58 2B-4T.
pub const BITNET_2B: TinyShape =
    TinyShape { n_embd: 2560, n_head: 20, n_kv_head: 5, head_dim: 128, n_ff: 6912, n_layer: 30, n_vocab: 128_256 };

/// A random `bitnet` model of BitNet b1.58 2B-4T's shape (2.4 billion
/// weights) with its matrices in `ty` and the tied embedding in `Q4_K` (what
/// `llama-quantize` gives `TQ1_0`/`TQ2_0` models), for speed figures. About
/// 0.6–1.4 GB depending on `ty`; seconds to make.
#[must_use]
pub fn bitnet_2b(ty: GgmlType, seed: u64) -> Vec<u8> {
    let s = BITNET_2B;
    let mut g = Gen::with_metadata("bitnet", s, seed);
    g.set("bitnet.context_length", MetaValue::U32(4096));
    g.set("bitnet.rope.freq_base", MetaValue::F32(500_000.0));
    g.set("bitnet.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5));
    g.set("general.name", MetaValue::String("hearth random bitnet-2b".into()));
    // Random Q4_K blocks with sane f16 scales: values of about ±1.
    let emb = g.q4_k_blocks_with(s.n_vocab * s.n_embd, 0.004, 0.002);
    g.w.add_tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], GgmlType::Q4_K, emb);
    bitnet_blocks(&mut g, s, ty);
    g.w.to_bytes()
}

/// The blocks and output norm of a `bitnet` model.
fn bitnet_blocks(g: &mut Gen, s: TinyShape, ty: GgmlType) {
    let (q_dim, kv_dim) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    for il in 0..s.n_layer {
        let p = |n: &str| format!("blk.{il}.{n}");
        g.norm(&p("attn_norm.weight"), s.n_embd);
        g.ternary_matrix(&p("attn_q"), q_dim, s.n_embd, ty);
        g.ternary_matrix(&p("attn_k"), kv_dim, s.n_embd, ty);
        g.ternary_matrix(&p("attn_v"), kv_dim, s.n_embd, ty);
        g.norm(&p("attn_sub_norm.weight"), q_dim);
        g.ternary_matrix(&p("attn_output"), s.n_embd, q_dim, ty);
        g.norm(&p("ffn_norm.weight"), s.n_embd);
        g.ternary_matrix(&p("ffn_gate"), s.n_ff, s.n_embd, ty);
        g.ternary_matrix(&p("ffn_up"), s.n_ff, s.n_embd, ty);
        g.norm(&p("ffn_sub_norm.weight"), s.n_ff);
        g.ternary_matrix(&p("ffn_down"), s.n_embd, s.n_ff, ty);
    }
    g.norm("output_norm.weight", s.n_embd);
}

/// Expert counts of a generated mixture-of-experts model.
#[derive(Debug, Clone, Copy)]
pub struct MoeShape {
    /// Attention and vocabulary (`n_ff` is the shared expert's size, if any).
    pub base: TinyShape,
    /// Experts per layer.
    pub n_expert: usize,
    /// Experts per token.
    pub n_expert_used: usize,
    /// Inner size of each expert.
    pub n_ff_exp: usize,
}

/// The shape of the tiny MoE test models (Q4_K experts need 256 columns).
pub const TINY_MOE: MoeShape = MoeShape {
    base: TinyShape { n_embd: 256, n_head: 4, n_kv_head: 2, head_dim: 64, n_ff: 128, n_layer: 2, n_vocab: 256 },
    n_expert: 8,
    n_expert_used: 2,
    n_ff_exp: 64,
};

/// OLMoE-1B-7B's shape (64 experts, 8 active; 6.9 billion weights, 1.3
/// billion active per token) under `qwen3moe`, whose graph is OLMoE's up to
/// the Q/K norm granularity: the realistic shape for MoE speed figures.
pub const OLMOE_LIKE: MoeShape = MoeShape {
    base: TinyShape { n_embd: 2048, n_head: 16, n_kv_head: 16, head_dim: 128, n_ff: 0, n_layer: 16, n_vocab: 50_304 },
    n_expert: 64,
    n_expert_used: 8,
    n_ff_exp: 1024,
};

/// A tiny random mixture-of-experts model: `llama` (Mixtral's layout),
/// `qwen2moe` (Q/K/V biases, a sigmoid-gated shared expert) or `qwen3moe`
/// (Q/K norms). Router in F32 (as `llama-quantize` leaves it), gate experts
/// in Q4_K, up experts in Q8_0, down experts in F16.
///
/// # Panics
/// For other architectures.
#[must_use]
pub fn tiny_moe(arch: &str, seed: u64) -> Vec<u8> {
    assert!(["llama", "qwen2moe", "qwen3moe"].contains(&arch), "tiny_moe: {arch}");
    let types = [GgmlType::TQ2_0, GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16];
    moe_model(arch, TINY_MOE, seed, types, None)
}

/// A random `qwen3moe` model of [`OLMOE_LIKE`]'s shape with every matrix in
/// `ty` (`Q4_K` or `Q4_0`; embedding and output too, router F32): about
/// 3.9 GB; seconds to make. Its context length is OLMoE's 4096 (the tiny
/// models' 256 would make llama-server refuse serving-sized prompts).
#[must_use]
pub fn olmoe_like(ty: GgmlType, seed: u64) -> Vec<u8> {
    moe_model("qwen3moe", OLMOE_LIKE, seed, [ty; 4], Some(4096))
}

/// An MoE model with attention matrices in `types[0]` and the gate, up and
/// down experts in `types[1..4]`; `n_ctx` overrides the tiny models' context length.
fn moe_model(arch: &str, m: MoeShape, seed: u64, types: [GgmlType; 4], n_ctx: Option<u32>) -> Vec<u8> {
    let s = m.base;
    let mut g = Gen::with_metadata(arch, s, seed);
    let k = |name: &str| format!("{arch}.{name}");
    if let Some(n_ctx) = n_ctx {
        g.set(&k("context_length"), MetaValue::U32(n_ctx));
    }
    g.set(&k("expert_count"), MetaValue::U32(m.n_expert as u32));
    g.set(&k("expert_used_count"), MetaValue::U32(m.n_expert_used as u32));
    g.set(&k("expert_feed_forward_length"), MetaValue::U32(m.n_ff_exp as u32));
    if arch == "qwen2moe" {
        g.set(&k("expert_shared_feed_forward_length"), MetaValue::U32(s.n_ff as u32));
    }
    if arch == "llama" {
        // Mixtral's experts have the model's FFN size.
        g.set(&k("feed_forward_length"), MetaValue::U32(m.n_ff_exp as u32));
    }
    let (q_dim, kv_dim) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    // Weights of about ±2/√n_embd keep activations and attention scores
    // moderate, so rounding differences between engines stay rounding-sized.
    let w = 2.0 / (s.n_embd as f32).sqrt();
    let big = s.n_vocab * s.n_embd > 1 << 20;
    let emb_ty = if big { types[0] } else { GgmlType::F32 };
    g.tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], emb_ty, 1.0);
    for il in 0..s.n_layer {
        let p = |n: &str| format!("blk.{il}.{n}");
        g.norm(&p("attn_norm.weight"), s.n_embd);
        g.matrix(&p("attn_q.weight"), q_dim, s.n_embd, types[0], w);
        g.matrix(&p("attn_k.weight"), kv_dim, s.n_embd, types[0], w);
        g.matrix(&p("attn_v.weight"), kv_dim, s.n_embd, types[0], w);
        g.matrix(&p("attn_output.weight"), s.n_embd, q_dim, types[0], w);
        if arch == "qwen2moe" {
            for (name, n) in [("attn_q.bias", q_dim), ("attn_k.bias", kv_dim), ("attn_v.bias", kv_dim)] {
                let b = g.values(n, 0.5);
                g.f32_tensor(&p(name), &[n as u64], &b);
            }
        }
        if arch == "qwen3moe" {
            g.norm(&p("attn_q_norm.weight"), s.head_dim);
            g.norm(&p("attn_k_norm.weight"), s.head_dim);
        }
        g.norm(&p("ffn_norm.weight"), s.n_embd);
        g.matrix(&p("ffn_gate_inp.weight"), m.n_expert, s.n_embd, GgmlType::F32, w);
        g.experts(&p("ffn_gate_exps.weight"), m.n_expert, m.n_ff_exp, s.n_embd, types[1], w);
        g.experts(&p("ffn_up_exps.weight"), m.n_expert, m.n_ff_exp, s.n_embd, types[2], w);
        g.experts(&p("ffn_down_exps.weight"), m.n_expert, s.n_embd, m.n_ff_exp, types[3], w);
        if arch == "qwen2moe" {
            let gate = g.values(s.n_embd, 0.25);
            g.f32_tensor(&p("ffn_gate_inp_shexp.weight"), &[s.n_embd as u64], &gate);
            g.matrix(&p("ffn_gate_shexp.weight"), s.n_ff, s.n_embd, types[2], w);
            g.matrix(&p("ffn_up_shexp.weight"), s.n_ff, s.n_embd, types[2], w);
            g.matrix(&p("ffn_down_shexp.weight"), s.n_embd, s.n_ff, types[2], w);
        }
    }
    g.norm("output_norm.weight", s.n_embd);
    g.matrix("output.weight", s.n_vocab, s.n_embd, types[0], 0.5);
    g.w.to_bytes()
}

/// Which DeepSeek-2 layout [`tiny_deepseek2`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeepSeekVariant {
    /// V2-Lite: queries projected directly, softmax routing, raw weights.
    Lite,
    /// V2-Lite with its YaRN RoPE scaling (factor 4 past a 16-token original
    /// context, `yarn_log_multiplier` 0.0707 as its files carry).
    LiteYarn,
    /// V3: low-rank queries, sigmoid routing with a selection bias,
    /// normalized and scaled weights.
    V3,
}

/// Latent-attention sizes of the tiny `deepseek2` models (DeepSeek-V2's
/// proportions scaled down: latent 64, 32 rotary and 32 position-free
/// query/key dims, 32 value dims per head).
pub const TINY_MLA: [usize; 5] = [
    64, // q_lora_rank (V3 only)
    64, // kv_lora_rank
    32, // qk_nope
    32, // qk_rope
    32, // v_head
];

/// A tiny random `deepseek2` model in llama.cpp's MLA layout (split
/// `attn_k_b` / `attn_v_b`): one leading dense block, then MoE blocks of
/// [`TINY_MOE`]'s expert counts with one shared expert. Attention matrices
/// in Q8_0 (`k_b`/`v_b` F16), gate experts Q4_K, up Q8_0, down F16.
#[must_use]
pub fn tiny_deepseek2(variant: DeepSeekVariant, seed: u64) -> Vec<u8> {
    let [q_lora, kv_lora, nope, rope, v_head] = TINY_MLA;
    let (m, arch) = (TINY_MOE, "deepseek2");
    let s = TinyShape { n_layer: 3, n_kv_head: 1, head_dim: kv_lora + rope, ..m.base };
    let mut g = Gen::with_metadata(arch, s, seed);
    let k = |name: &str| format!("{arch}.{name}");
    let u32_keys = [
        ("attention.value_length", kv_lora),
        ("attention.key_length_mla", nope + rope),
        ("attention.value_length_mla", v_head),
        ("attention.kv_lora_rank", kv_lora),
        ("attention.q_lora_rank", if variant == DeepSeekVariant::V3 { q_lora } else { 0 }),
        ("rope.dimension_count", rope),
        ("leading_dense_block_count", 1),
        ("expert_count", m.n_expert),
        ("expert_used_count", m.n_expert_used),
        ("expert_feed_forward_length", m.n_ff_exp),
        ("expert_shared_count", 1),
        ("expert_gating_func", if variant == DeepSeekVariant::V3 { 2 } else { 1 }),
    ];
    for (name, v) in u32_keys {
        g.set(&k(name), MetaValue::U32(v as u32));
    }
    if variant == DeepSeekVariant::LiteYarn {
        g.set(&k("rope.scaling.type"), MetaValue::String("yarn".into()));
        g.set(&k("rope.scaling.factor"), MetaValue::F32(4.0));
        g.set(&k("rope.scaling.original_context_length"), MetaValue::U32(16));
        g.set(&k("rope.scaling.yarn_log_multiplier"), MetaValue::F32(0.0707));
    }
    if variant == DeepSeekVariant::V3 {
        g.set(&k("expert_weights_norm"), MetaValue::Bool(true));
        g.set(&k("expert_weights_scale"), MetaValue::F32(2.5));
    }
    let w = 2.0 / (s.n_embd as f32).sqrt();
    let (q_head, att) = (nope + rope, GgmlType::Q8_0);
    g.tensor("token_embd.weight", &[s.n_embd as u64, s.n_vocab as u64], GgmlType::F32, 1.0);
    for il in 0..s.n_layer {
        let p = |n: &str| format!("blk.{il}.{n}");
        g.norm(&p("attn_norm.weight"), s.n_embd);
        if variant == DeepSeekVariant::V3 {
            g.matrix(&p("attn_q_a.weight"), q_lora, s.n_embd, att, w);
            g.norm(&p("attn_q_a_norm.weight"), q_lora);
            g.matrix(&p("attn_q_b.weight"), s.n_head * q_head, q_lora, att, 2.0 / (q_lora as f32).sqrt());
        } else {
            g.matrix(&p("attn_q.weight"), s.n_head * q_head, s.n_embd, att, w);
        }
        g.matrix(&p("attn_kv_a_mqa.weight"), kv_lora + rope, s.n_embd, att, w);
        g.norm(&p("attn_kv_a_norm.weight"), kv_lora);
        let lw = 2.0 / (kv_lora as f32).sqrt();
        g.experts(&p("attn_k_b.weight"), s.n_head, kv_lora, nope, GgmlType::F16, 2.0 / (nope as f32).sqrt());
        g.experts(&p("attn_v_b.weight"), s.n_head, v_head, kv_lora, GgmlType::F16, lw);
        g.matrix(&p("attn_output.weight"), s.n_embd, s.n_head * v_head, att, 2.0 / ((s.n_head * v_head) as f32).sqrt());
        g.norm(&p("ffn_norm.weight"), s.n_embd);
        if il == 0 {
            g.matrix(&p("ffn_gate.weight"), s.n_ff, s.n_embd, att, w);
            g.matrix(&p("ffn_up.weight"), s.n_ff, s.n_embd, att, w);
            g.matrix(&p("ffn_down.weight"), s.n_embd, s.n_ff, att, w);
            continue;
        }
        g.matrix(&p("ffn_gate_inp.weight"), m.n_expert, s.n_embd, GgmlType::F32, w);
        if variant == DeepSeekVariant::V3 {
            let bias = g.values(m.n_expert, 0.05);
            g.f32_tensor(&p("exp_probs_b.bias"), &[m.n_expert as u64], &bias);
        }
        g.experts(&p("ffn_gate_exps.weight"), m.n_expert, m.n_ff_exp, s.n_embd, GgmlType::Q4_K, w);
        g.experts(&p("ffn_up_exps.weight"), m.n_expert, m.n_ff_exp, s.n_embd, GgmlType::Q8_0, w);
        g.experts(&p("ffn_down_exps.weight"), m.n_expert, s.n_embd, m.n_ff_exp, GgmlType::F16, w);
        g.matrix(&p("ffn_gate_shexp.weight"), m.n_ff_exp, s.n_embd, att, w);
        g.matrix(&p("ffn_up_shexp.weight"), m.n_ff_exp, s.n_embd, att, w);
        g.matrix(&p("ffn_down_shexp.weight"), s.n_embd, m.n_ff_exp, GgmlType::F16, w);
    }
    g.norm("output_norm.weight", s.n_embd);
    g.matrix("output.weight", s.n_vocab, s.n_embd, att, 0.5);
    g.w.to_bytes()
}

/// The token ids fed to tiny models in the architecture tests.
#[must_use]
pub fn tiny_prompt() -> Vec<u32> {
    (0..32).map(|i| (7 * i + 3) % 256).collect()
}
