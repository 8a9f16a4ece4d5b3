//! The backend boundary: everything a model forward pass asks of the hardware.
//! Models see only this trait; the CPU backend lives in `hearth-cpu`, and a
//! CUDA backend joins by implementing it.
//!
//! Activations are host `f32` slices for now (CPU first). A device backend
//! will need opaque activation buffers; that change is confined to this trait
//! and the shared layers that call it, not to the architecture files.

use crate::{AttentionSpan, GgmlType, KvDataMut, KvLayer, TokenId};

/// A weight matrix in its stored (possibly quantized) form: `rows` rows of
/// `cols` elements each, row-major, ggml block encoding.
#[derive(Debug, Clone, Copy)]
pub struct WeightView<'a> {
    /// Element type.
    pub ty: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Elements per row (input features).
    pub cols: usize,
    /// Encoded bytes, exactly `rows * ty.row_bytes(cols)`.
    pub data: &'a [u8],
    /// One expert of a 3-D MoE tensor. llama.cpp multiplies those one
    /// activation row at a time (`MUL_MAT_ID`), which for some types fixes a
    /// float order a backend reproducing llama.cpp's numerics must keep.
    pub expert: bool,
    /// No reference engine's float summation order to reproduce (an
    /// encoder read from safetensors): the backend may use its fastest
    /// product. GGUF weights leave this off, so outputs equal llama.cpp's.
    pub any_order: bool,
}

/// How RoPE pairs up dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)` (ggml `GGML_ROPE_TYPE_NORM`, Llama).
    Normal,
    /// Halves `(i, i + n_rot/2)` (ggml `GGML_ROPE_TYPE_NEOX`, Qwen, Gemma).
    NeoX,
}

/// Rotary position embedding parameters: ggml's `rope_ext` (frequency
/// ladder, linear scaling, YaRN, per-frequency factors).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    /// Pairing style.
    pub style: RopeStyle,
    /// Number of leading dimensions of each head that are rotated.
    pub n_rot: usize,
    /// Base of the frequency ladder (`rope.freq_base`).
    pub freq_base: f32,
    /// Linear position scaling (`1 / rope.scaling.factor`).
    pub freq_scale: f32,
    /// YaRN's extrapolation mix (1 for YaRN files, 0 otherwise): between
    /// the correction dimensions, angles blend the scaled and unscaled ones.
    pub ext_factor: f32,
    /// Magnitude multiplier of cos and sin (YaRN's attention factor; 1 otherwise).
    pub attn_factor: f32,
    /// YaRN's correction dimensions (`ggml_rope_yarn_corr_dims`).
    pub corr_dims: [f32; 2],
    /// Per-frequency divisors of the angles (Llama 3's `rope_freqs`, LongRoPE's factors).
    pub freq_factors: Option<std::sync::Arc<[f32]>>,
}

impl RopeParams {
    /// Plain RoPE: `n_rot` dimensions, base `freq_base`, linear scale `freq_scale`.
    #[must_use]
    pub fn plain(style: RopeStyle, n_rot: usize, freq_base: f32, freq_scale: f32) -> Self {
        Self { style, n_rot, freq_base, freq_scale, ext_factor: 0.0, attn_factor: 1.0, corr_dims: [0.0; 2], freq_factors: None }
    }

    /// The same rotation over no dimensions: attention without positions.
    #[must_use]
    pub fn none(&self) -> Self {
        Self { n_rot: 0, ..self.clone() }
    }

    /// Sets YaRN's parameters (`ext_factor` 1 with `attn_factor` as llama.cpp
    /// derives it), the correction dimensions computed as ggml does from the
    /// original context `n_ctx_orig` and `beta_fast`/`beta_slow`.
    #[must_use]
    pub fn with_yarn(mut self, ext_factor: f32, attn_factor: f32, n_ctx_orig: usize, beta_fast: f32, beta_slow: f32) -> Self {
        // ggml_rope_yarn_corr_dim: the dimension whose wavelength makes `n_rot`
        // turns over the original context.
        let corr_dim = |beta: f32| {
            self.n_rot as f32 * (n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln() / (2.0 * self.freq_base.ln())
        };
        self.ext_factor = ext_factor;
        self.attn_factor = attn_factor;
        self.corr_dims =
            [corr_dim(beta_fast).floor().max(0.0), corr_dim(beta_slow).ceil().min(self.n_rot as f32 - 1.0)];
        self
    }
}

/// The gating activation of a gated MLP: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (Llama, Qwen).
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
    /// `relu(x)²` (BitNet b1.58 2B-4T, bitnet.cpp's `bitnet-b1.58`).
    ReluSquared,
    /// gpt-oss's clamped SwiGLU (ggml's `swiglu_oai`, α = 1.702, limit 7):
    /// `x = min(gate, 7)`, `y = clamp(up, −7, 7)`, `x·σ(α·x)·(y + 1)`.
    SwigluOai,
}

/// Geometry of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_kv_head: usize,
    /// Dimension of each query and key head.
    pub head_dim: usize,
    /// Dimension of each value head (and of each output head); equals
    /// `head_dim` except in DeepSeek's latent attention.
    pub v_head_dim: usize,
    /// Multiplier applied to `q · k`.
    pub scale: f32,
    /// Soft cap of the scores (Gemma 2's `attn_logit_softcapping`), 0 for
    /// none: `score = cap · tanh(q·k · (scale / cap))`, as ggml's flash
    /// attention computes it.
    pub softcap: f32,
}

impl AttentionShape {
    /// The attention score of a raw `q · k` product.
    #[inline]
    #[must_use]
    pub fn score(&self, dot: f32) -> f32 {
        if self.softcap == 0.0 {
            dot * self.scale
        } else {
            self.softcap * (dot * (self.scale / self.softcap)).tanh()
        }
    }
}

/// A weight matrix in the form one backend computes with (repacked for CPU
/// kernels, or resident in device memory), made once at load by
/// [`Backend::prepare`] and handed back to that backend's [`Backend::matmul`].
pub trait PreparedWeight: Send + Sync {
    /// Output features.
    fn rows(&self) -> usize;
    /// Input features.
    fn cols(&self) -> usize;
    /// Bytes held (what one pass over the matrix reads).
    fn bytes(&self) -> usize;
    /// For the owning backend to recover its concrete type.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// One product of a [`Backend::matmul_many`] step: `out = x · wᵀ`, as
/// [`Backend::matmul`] takes them.
pub struct MatmulJob<'a> {
    /// Weights.
    pub w: &'a dyn PreparedWeight,
    /// `n × w.cols()` activations.
    pub x: &'a [f32],
    /// Activation rows.
    pub n: usize,
    /// `n × w.rows()` results.
    pub out: &'a mut [f32],
}

/// A backend could not run an operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The weight type has no kernel in this backend.
    #[error("tensor type {0} is not supported by this backend")]
    UnsupportedType(GgmlType),
    /// A prepared weight from another backend was passed in.
    #[error("weight was prepared by a different backend")]
    ForeignWeight,
    /// The backend cannot be set up as asked.
    #[error("backend configuration: {0}")]
    Config(String),
}

/// The operations a model needs. Shapes are given in rows: `x` with `n`
/// rows of `dim` elements is a slice of `n * dim` floats.
pub trait Backend: Send + Sync {
    /// One line naming the backend and the kernels it picked.
    fn describe(&self) -> String;
    /// Whether `matmul`/`get_rows` have a kernel for weights of type `ty`.
    fn supports(&self, ty: GgmlType) -> bool;
    /// Converts a matrix to this backend's form for [`Backend::matmul`].
    fn prepare(&self, w: &WeightView<'_>) -> Result<Box<dyn PreparedWeight>, BackendError>;
    /// `out[t][r] = W[r] · x[t]`: `x` is `n × w.cols()`, `out` is `n × w.rows()`.
    fn matmul(&self, w: &dyn PreparedWeight, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), BackendError>;
    /// Independent products computed together, as one parallel step: what
    /// a model can run side by side (Q, K and V; gate and up; the experts of
    /// a MoE layer) costs one synchronization instead of one each, and the
    /// workers balance over all of them. Each result equals [`Backend::matmul`]'s.
    fn matmul_many(&self, jobs: &mut [MatmulJob<'_>]) -> Result<(), BackendError> {
        for j in jobs {
            self.matmul(j.w, j.x, j.n, j.out)?;
        }
        Ok(())
    }
    /// Dequantized rows `ids` of `w` (embedding lookup): `out` is `ids.len() × w.cols`.
    fn get_rows(&self, w: &WeightView<'_>, ids: &[TokenId], out: &mut [f32]) -> Result<(), BackendError>;
    /// In-place RMS norm of each `dim`-sized row, then multiply by `weight`.
    fn rms_norm(&self, x: &mut [f32], dim: usize, weight: &[f32], eps: f32);
    /// In-place softmax of each `dim`-sized row (MoE routing).
    fn softmax_rows(&self, x: &mut [f32], dim: usize);
    /// In-place rotary embedding of every head of every row; row `i` is at `positions[i]`.
    fn rope(&self, x: &mut [f32], head_dim: usize, positions: &[usize], params: &RopeParams);
    /// `gate = act(gate) * up`, element-wise.
    fn gated_activation(&self, gate: &mut [f32], up: &[f32], act: Activation);
    /// Softmax attention for each query row of `q` (`n × n_head*head_dim`) over
    /// its span of `kv`; writes `out` (`n × n_head*v_head_dim`). `sinks`
    /// (gpt-oss's `attn_sinks`, one logit per query head) join each head's
    /// softmax as a key with a zero value, as ggml's flash attention adds them.
    fn attention(
        &self,
        q: &[f32],
        shape: &AttentionShape,
        kv: &KvLayer<'_>,
        spans: &[AttentionSpan<'_>],
        sinks: Option<&[f32]>,
        out: &mut [f32],
    );
    /// In-place orthonormal Walsh–Hadamard transform of every `head_dim`-sized
    /// head of `x` (`head_dim` a power of two). It is its own inverse and keeps
    /// dot products, so rotating Q, K and V before a quantized KV cache and the
    /// attention output after changes nothing but spreads outlier channels
    /// over the block, which makes 4-bit keys usable.
    fn rotate_heads(&self, x: &mut [f32], head_dim: usize);
    /// Stores `x` (`rows.len() × dim`, f32) into rows `rows` of a KV pool, in
    /// the pool's element type.
    fn write_kv(&self, pool: &mut KvDataMut<'_>, dim: usize, rows: &[usize], x: &[f32]);

    // Encoder operations (BERT-style embedding and reranking models). The
    // default bodies are the scalar references; a backend overrides them
    // with faster kernels tested against these.

    /// In-place layer norm of each `dim`-sized row: `(x − mean) / √(var + eps) · weight + bias`.
    fn layer_norm(&self, x: &mut [f32], dim: usize, weight: &[f32], bias: &[f32], eps: f32) {
        reference::layer_norm(x, dim, weight, bias, eps);
    }

    /// In-place exact GELU, `x · Φ(x)` with the error function (BERT's `gelu`).
    fn gelu_erf(&self, x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = reference::gelu_erf(*v));
    }

    /// Bidirectional (unmasked) attention within each packed sequence;
    /// `out` is shaped as `x.q`.
    fn encoder_attention(&self, x: &PackedQkv<'_>, out: &mut [f32]) {
        reference::encoder_attention(x, out);
    }
}

/// Queries, keys and values of packed sequences for
/// [`Backend::encoder_attention`]: each `n × n_head*head_dim`, the rows of
/// sequence `i` following those of sequence `i − 1`, `seq_lens[i]` rows each.
#[derive(Debug, Clone, Copy)]
pub struct PackedQkv<'a> {
    /// Queries.
    pub q: &'a [f32],
    /// Keys.
    pub k: &'a [f32],
    /// Values.
    pub v: &'a [f32],
    /// Heads.
    pub n_head: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Rows of each sequence, in order.
    pub seq_lens: &'a [usize],
}

/// Scalar reference bodies of the encoder operations.
pub mod reference {
    /// See [`super::Backend::layer_norm`].
    pub fn layer_norm(x: &mut [f32], dim: usize, weight: &[f32], bias: &[f32], eps: f32) {
        for row in x.chunks_exact_mut(dim) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / dim as f64;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / dim as f64;
            let inv = 1.0 / (var + f64::from(eps)).sqrt();
            for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
                *v = ((f64::from(*v) - mean) * inv) as f32 * w + b;
            }
        }
    }

    /// `x · Φ(x)`.
    #[must_use]
    pub fn gelu_erf(x: f32) -> f32 {
        0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
    }

    /// See [`super::Backend::encoder_attention`].
    pub fn encoder_attention(x: &super::PackedQkv<'_>, out: &mut [f32]) {
        let super::PackedQkv { q, k, v, n_head, head_dim, seq_lens } = *x;
        let width = n_head * head_dim;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut scores = Vec::new();
        let mut start = 0;
        for &len in seq_lens {
            for h in 0..n_head {
                let col = h * head_dim;
                for i in start..start + len {
                    let qi = &q[i * width + col..i * width + col + head_dim];
                    scores.clear();
                    scores.extend((start..start + len).map(|j| {
                        let kj = &k[j * width + col..j * width + col + head_dim];
                        qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale
                    }));
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for s in &mut scores {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let o = &mut out[i * width + col..i * width + col + head_dim];
                    o.fill(0.0);
                    for (j, &p) in (start..start + len).zip(&scores) {
                        let vj = &v[j * width + col..j * width + col + head_dim];
                        for (a, b) in o.iter_mut().zip(vj) {
                            *a += p / sum * b;
                        }
                    }
                }
            }
            start += len;
        }
    }
}
