//! Building blocks shared by the architecture files: norms, attention, MLPs,
//! embeddings and the LM head, all expressed over the [`Backend`] trait.

use hearth_core::{Activation, AttentionShape, Backend, ForwardBatch, KvType, MatmulJob, RopeParams, RopeStyle, SeqId};
use hearth_gguf::GgufFile;

use crate::lora::{ActiveAdapters, LoraPair};
use crate::weights::{Matrix, TensorRef, WeightLoader};
use crate::{KvStore, ModelConfig, ModelError};

/// What every layer needs during one forward pass.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// Kernels.
    pub backend: &'a dyn Backend,
    /// The mapped model file the weights point into.
    pub file: &'a GgufFile,
    /// The batch being evaluated.
    pub batch: &'a ForwardBatch,
    /// KV pool row of each batch row (checked by [`KvStore::rows_of`]).
    pub kv_rows: &'a [usize],
    /// The LoRA adapters of the batch's sequences, when any uses one.
    pub adapters: Option<&'a ActiveAdapters>,
}

impl Ctx<'_> {
    /// `x (n × cols) → n × w.rows`.
    pub fn matmul(&self, w: &Matrix, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        self.matmul_rows(w, x, self.batch.len())
    }

    /// `x (n × cols) → n × w.rows`, for inputs with fewer rows than the
    /// batch (the LM head sees only the rows that want logits). Applies the
    /// matrix's per-tensor scale, if any.
    pub fn matmul_rows(&self, w: &Matrix, x: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        let [out] = self.matmul_array([(w, x, n)])?;
        Ok(out)
    }

    /// Independent products `(w, x, n)` as one backend step (see
    /// [`Backend::matmul_many`]); results in the same order, scales applied.
    pub fn matmul_many(&self, products: &[(&Matrix, &[f32], usize)]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut outs: Vec<Vec<f32>> = products.iter().map(|(w, _, n)| vec![0.0; n * w.rows()]).collect();
        let mut jobs: Vec<MatmulJob<'_>> = products
            .iter()
            .zip(outs.iter_mut())
            .map(|(&(w, x, n), out)| MatmulJob { w: w.weight(), x, n, out })
            .collect();
        self.backend.matmul_many(&mut jobs)?;
        drop(jobs);
        for ((w, _, _), out) in products.iter().zip(outs.iter_mut()) {
            if let Some(s) = w.scale() {
                out.iter_mut().for_each(|v| *v *= s);
            }
        }
        if let Some(adapters) = self.adapters {
            self.add_adapters(adapters, products, &mut outs)?;
        }
        Ok(outs)
    }

    /// Adds each adapter's `scale · B(A x)` to the rows of the sequences
    /// that use it (llama.cpp's `build_lora_mm`: base, then per adapter the
    /// scaled low-rank product added). Rows are gathered per (product,
    /// adapter) group, and all groups' `A` products run as one backend step,
    /// then all `B` products.
    fn add_adapters(
        &self,
        adapters: &ActiveAdapters,
        products: &[(&Matrix, &[f32], usize)],
        outs: &mut [Vec<f32>],
    ) -> Result<(), ModelError> {
        struct Group<'g> {
            product: usize,
            pair: &'g LoraPair,
            scale: f32,
            rows: Vec<usize>,
            x: Vec<f32>,
        }
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (p, &(w, x, n)) in products.iter().enumerate() {
            let Some(name) = w.name() else { continue };
            // A sequence's rows are contiguous: its pair is looked up once per run.
            let mut last: Option<(SeqId, Option<(&LoraPair, f32)>)> = None;
            for (row, &seq) in self.batch.seq_ids.iter().enumerate() {
                let found = match last {
                    Some((s, found)) if s == seq => found,
                    _ => {
                        let found = adapters.of(seq).and_then(|(a, user)| a.pair(name).map(|pair| (pair, a.scale(pair, *user))));
                        last = Some((seq, found));
                        found
                    }
                };
                let Some((pair, scale)) = found else { continue };
                if n != self.batch.len() {
                    return Err(ModelError::BadBatch(format!("{name}: an adapted product must cover the batch's rows")));
                }
                let cols = x.len() / n;
                let row_x = &x[row * cols..(row + 1) * cols];
                match groups.iter_mut().find(|g| g.product == p && std::ptr::eq(g.pair, pair) && g.scale.to_bits() == scale.to_bits()) {
                    Some(g) => {
                        g.rows.push(row);
                        g.x.extend_from_slice(row_x);
                    }
                    None => groups.push(Group { product: p, pair, scale, rows: vec![row], x: row_x.to_vec() }),
                }
            }
        }
        if groups.is_empty() {
            return Ok(());
        }
        let a: Vec<(&Matrix, &[f32], usize)> = groups.iter().map(|g| (&g.pair.a, g.x.as_slice(), g.rows.len())).collect();
        let ax = self.base_products(&a)?;
        let b: Vec<(&Matrix, &[f32], usize)> =
            groups.iter().zip(&ax).map(|(g, t)| (&g.pair.b, t.as_slice(), g.rows.len())).collect();
        let bax = self.base_products(&b)?;
        for (g, delta) in groups.iter().zip(bax) {
            let out = &mut outs[g.product];
            let n_out = out.len() / self.batch.len();
            for (i, &row) in g.rows.iter().enumerate() {
                let dst = &mut out[row * n_out..(row + 1) * n_out];
                dst.iter_mut().zip(&delta[i * n_out..(i + 1) * n_out]).for_each(|(o, d)| *o += d * g.scale);
            }
        }
        Ok(())
    }

    /// Products with no adapters and no per-tensor scales (an adapter's own
    /// matrices), as one backend step.
    fn base_products(&self, products: &[(&Matrix, &[f32], usize)]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ctx { adapters: None, ..*self }.matmul_many(products)
    }

    /// [`Ctx::matmul_many`] for a fixed number of products.
    pub fn matmul_array<const N: usize>(
        &self,
        products: [(&Matrix, &[f32], usize); N],
    ) -> Result<[Vec<f32>; N], ModelError> {
        let mut outs = self.matmul_many(&products)?.into_iter();
        // matmul_many returns exactly one result per product.
        Ok(std::array::from_fn(|_| outs.next().unwrap_or_default()))
    }
}

/// RMS norm with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// Loads `name` of length `dim`.
    pub fn load(w: &WeightLoader<'_>, name: &str, dim: usize, eps: f32) -> Result<Self, ModelError> {
        Ok(Self { weight: w.vector(name, dim)?, eps })
    }

    /// Loads `name` if present.
    pub fn load_optional(w: &WeightLoader<'_>, name: &str, dim: usize, eps: f32) -> Result<Option<Self>, ModelError> {
        Ok(w.optional_vector(name, dim)?.map(|weight| Self { weight, eps }))
    }

    /// Normalizes each `weight.len()`-sized row of `x` in place.
    pub fn apply(&self, ctx: &Ctx<'_>, x: &mut [f32]) {
        ctx.backend.rms_norm(x, self.weight.len(), &self.weight, self.eps);
    }

    /// Returns a normalized copy of `x`.
    #[must_use]
    pub fn forward(&self, ctx: &Ctx<'_>, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        self.apply(ctx, &mut y);
        y
    }
}

/// Llama 4's attention temperature tuning (`attention.temperature_scale`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryTemperature {
    /// `attention.temperature_scale`.
    pub scale: f32,
    /// Positions per step of the logarithm (the original context, for Mistral 3).
    pub floor: f32,
    /// Added to the position first (0 for Mistral 3).
    pub offset: f32,
}

impl QueryTemperature {
    /// The query multiplier at `pos`: llama.cpp computes it in double from
    /// f32 parts (`llm_graph_input_attn_temp`), stored as f32.
    #[must_use]
    pub fn factor(&self, pos: usize) -> f32 {
        let steps = ((pos as f32 + self.offset) / self.floor).floor();
        ((f64::from(steps) + 1.0).ln() * f64::from(self.scale) + 1.0) as f32
    }
}

/// Self-attention with optional Q/K/V biases (Qwen2) and per-head Q/K norms
/// (Qwen3, Gemma 3), grouped-query heads and RoPE.
pub struct Attention {
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    wo: Matrix,
    bias: Option<[Vec<f32>; 3]>,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    /// Norm of the attention output before `wo` (BitNet's `attn_sub_norm`).
    sub_norm: Option<RmsNorm>,
    /// Bias of `wo`'s output (gpt-oss's `attn_output.bias`).
    wo_bias: Option<Vec<f32>>,
    /// One logit per query head that joins the softmax (gpt-oss's `attn_sinks`).
    sinks: Option<Vec<f32>>,
    /// Llama 4's attention temperature tuning (Mistral 3 too): queries of
    /// position `p` scaled by `ln(⌊(p + offset) / floor⌋ + 1)·scale + 1`.
    temperature: Option<QueryTemperature>,
    /// Queries are multiplied by the score scale in f32 before attention
    /// (which then scales by 1), as llama.cpp's Gemma 3 graph does: the
    /// f16 rounding of queries inside attention then sees the scaled values.
    prescale_queries: bool,
    shape: AttentionShape,
}

impl Attention {
    /// Loads `blk.{il}.attn_*` for `cfg`.
    pub fn load(w: &WeightLoader<'_>, cfg: &ModelConfig, il: usize) -> Result<Self, ModelError> {
        let p = |s: &str| format!("blk.{il}.{s}");
        if cfg.values_in_keys {
            return Err(ModelError::BadMetadata(format!(
                "{}.attention.key_length_mla is set, but this architecture has no latent attention",
                cfg.arch
            )));
        }
        let (q_dim, kv_dim) = (cfg.n_head * cfg.head_dim, cfg.kv_dim());
        // Q, K and V as three tensors, or fused in one (`attn_qkv`, Phi-3 and others).
        let fused = w.has(&p("attn_qkv.weight"));
        let bias = if fused {
            w.optional_vector(&p("attn_qkv.bias"), q_dim + 2 * kv_dim)?.map(|b| {
                let (q, kv) = b.split_at(q_dim);
                let (k, v) = kv.split_at(kv_dim);
                [q.to_vec(), k.to_vec(), v.to_vec()]
            })
        } else {
            match (
                w.optional_vector(&p("attn_q.bias"), q_dim)?,
                w.optional_vector(&p("attn_k.bias"), kv_dim)?,
                w.optional_vector(&p("attn_v.bias"), kv_dim)?,
            ) {
                (Some(q), Some(k), Some(v)) => Some([q, k, v]),
                _ => None,
            }
        };
        let [wq, wk, wv] = if fused {
            let mut parts = w.row_blocks(&p("attn_qkv.weight"), &[q_dim, kv_dim, kv_dim], cfg.n_embd)?.into_iter();
            let mut next = || parts.next().ok_or_else(|| ModelError::MissingTensor { name: p("attn_qkv.weight") });
            [next()?, next()?, next()?]
        } else {
            [
                w.matrix(&p("attn_q.weight"), q_dim, cfg.n_embd)?,
                w.matrix(&p("attn_k.weight"), kv_dim, cfg.n_embd)?,
                w.matrix(&p("attn_v.weight"), kv_dim, cfg.n_embd)?,
            ]
        };
        Ok(Self {
            wq,
            wk,
            wv,
            wo: w.matrix(&p("attn_output.weight"), cfg.n_embd, q_dim)?,
            bias,
            q_norm: RmsNorm::load_optional(w, &p("attn_q_norm.weight"), cfg.head_dim, cfg.norm_eps)?,
            k_norm: RmsNorm::load_optional(w, &p("attn_k_norm.weight"), cfg.head_dim, cfg.norm_eps)?,
            sub_norm: None,
            wo_bias: w.optional_vector(&p("attn_output.bias"), cfg.n_embd)?,
            sinks: w.optional_vector(&p("attn_sinks.weight"), cfg.n_head)?,
            temperature: None,
            prescale_queries: false,
            shape: AttentionShape {
                n_head: cfg.n_head,
                n_kv_head: cfg.n_kv_head,
                head_dim: cfg.head_dim,
                v_head_dim: cfg.head_dim,
                scale: 1.0 / (cfg.head_dim as f32).sqrt(),
                softcap: 0.0,
            },
        })
    }

    /// Scales queries before attention instead of scores inside it (see
    /// `prescale_queries`).
    #[must_use]
    pub fn with_prescaled_queries(mut self) -> Self {
        self.prescale_queries = true;
        self
    }

    /// Multiplies `q · k` by `scale` instead of `1/√head_dim`, where given
    /// (Granite's `attention.scale`).
    #[must_use]
    pub fn with_score_scale(mut self, scale: Option<f32>) -> Self {
        if let Some(scale) = scale {
            self.shape.scale = scale;
        }
        self
    }

    /// Scales queries by position (Llama 4's temperature tuning), where given.
    #[must_use]
    pub fn with_temperature(mut self, t: Option<QueryTemperature>) -> Self {
        self.temperature = t;
        self
    }

    /// Soft-caps the attention scores at `cap`, where given (Gemma 2).
    #[must_use]
    pub fn with_softcap(mut self, cap: Option<f32>) -> Self {
        self.shape.softcap = cap.unwrap_or(0.0);
        self
    }

    /// Adds a norm of the attention output before the output projection.
    #[must_use]
    pub fn with_sub_norm(mut self, norm: RmsNorm) -> Self {
        self.sub_norm = Some(norm);
        self
    }
}

/// A block's attention: grouped-query [`Attention`] here, or an
/// architecture's own (DeepSeek's latent attention lives in `deepseek2.rs`).
pub trait SelfAttention: Send + Sync {
    /// Attention output (`n × n_embd`) for normalized input `x`; caches the
    /// batch's rows of layer `il` in `kv`. `window` limits how far back it
    /// looks, where the attention has such a limit.
    fn forward(
        &self,
        ctx: &Ctx<'_>,
        kv: &mut KvStore,
        il: usize,
        x: &[f32],
        rope: &RopeParams,
        window: Option<usize>,
    ) -> Result<Vec<f32>, ModelError>;
}

impl SelfAttention for Attention {
    /// Attention output (`n × n_embd`) for normalized input `x`; stores this
    /// layer's K/V for the batch in `kv`.
    fn forward(
        &self,
        ctx: &Ctx<'_>,
        kv: &mut KvStore,
        il: usize,
        x: &[f32],
        rope: &RopeParams,
        window: Option<usize>,
    ) -> Result<Vec<f32>, ModelError> {
        let n = ctx.batch.len();
        let [mut q, mut k, mut v] = ctx.matmul_array([(&self.wq, x, n), (&self.wk, x, n), (&self.wv, x, n)])?;
        if let Some([bq, bk, bv]) = &self.bias {
            add_row_bias(&mut q, bq);
            add_row_bias(&mut k, bk);
            add_row_bias(&mut v, bv);
        }
        if let Some(norm) = &self.q_norm {
            norm.apply(ctx, &mut q);
        }
        if let Some(norm) = &self.k_norm {
            norm.apply(ctx, &mut k);
        }
        let hd = self.shape.head_dim;
        ctx.backend.rope(&mut q, hd, &ctx.batch.positions, rope);
        ctx.backend.rope(&mut k, hd, &ctx.batch.positions, rope);
        if let Some(t) = &self.temperature {
            let row = q.len() / ctx.batch.len().max(1);
            for (qr, &pos) in q.chunks_exact_mut(row).zip(&ctx.batch.positions) {
                let f = t.factor(pos);
                qr.iter_mut().for_each(|v| *v *= f);
            }
        }
        let mut shape = self.shape;
        if self.prescale_queries {
            q.iter_mut().for_each(|v| *v *= shape.scale);
            shape.scale = 1.0;
        }
        // Quantized caches store rotated heads (llama.cpp does the same):
        // scores and outputs are unchanged, quantization error is not.
        let rotate = kv.kv_type() != KvType::F16 && hd.is_power_of_two() && hd >= 32;
        if rotate {
            for x in [&mut q, &mut k, &mut v] {
                ctx.backend.rotate_heads(x, hd);
            }
        }
        kv.write(ctx.backend, il, ctx.kv_rows, &k, &v);
        let spans = KvStore::spans(ctx.batch, window);
        let mut attn = vec![0.0; q.len()];
        ctx.backend.attention(&q, &shape, &kv.layer(il), &spans, self.sinks.as_deref(), &mut attn);
        if rotate {
            ctx.backend.rotate_heads(&mut attn, hd);
        }
        if let Some(norm) = &self.sub_norm {
            norm.apply(ctx, &mut attn);
        }
        let mut out = ctx.matmul(&self.wo, &attn)?;
        if let Some(b) = &self.wo_bias {
            add_row_bias(&mut out, b);
        }
        Ok(out)
    }
}

fn add_row_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

/// `down(act(gate(x)) * up(x))`.
pub struct GatedMlp {
    gate: Matrix,
    up: Matrix,
    down: Matrix,
    act: Activation,
    /// Norm of `act(gate)·up` before `down` (BitNet's `ffn_sub_norm`).
    sub_norm: Option<RmsNorm>,
    /// Biases of the gate, up and down outputs (gpt-oss's experts).
    biases: Option<[Vec<f32>; 3]>,
}

impl GatedMlp {
    /// An MLP from its three matrices.
    #[must_use]
    pub fn new(gate: Matrix, up: Matrix, down: Matrix, act: Activation) -> Self {
        Self { gate, up, down, act, sub_norm: None, biases: None }
    }

    /// Loads `blk.{il}.ffn_{gate,up,down}`.
    pub fn load(w: &WeightLoader<'_>, cfg: &ModelConfig, il: usize, act: Activation) -> Result<Self, ModelError> {
        Self::load_named(w, &format!("blk.{il}.ffn_{{}}.weight"), cfg.n_ff, cfg.n_embd, act)
    }

    /// Loads the matrices named by `pattern` with `{}` replaced by `gate`,
    /// `up` and `down`, of inner size `n_ff`.
    pub fn load_named(
        w: &WeightLoader<'_>,
        pattern: &str,
        n_ff: usize,
        n_embd: usize,
        act: Activation,
    ) -> Result<Self, ModelError> {
        let name = |part: &str| pattern.replace("{}", part);
        // Gate and up as two tensors, or fused in `up` with the gate rows
        // first (Phi-3; llama.cpp's `swiglu` of the halves).
        let (gate, up) = if w.has(&name("gate")) {
            (w.matrix(&name("gate"), n_ff, n_embd)?, w.matrix(&name("up"), n_ff, n_embd)?)
        } else {
            let mut parts = w.row_blocks(&name("up"), &[n_ff, n_ff], n_embd)?.into_iter();
            let mut next = || parts.next().ok_or_else(|| ModelError::MissingTensor { name: name("up") });
            (next()?, next()?)
        };
        Ok(Self::new(gate, up, w.matrix(&name("down"), n_embd, n_ff)?, act))
    }

    /// Adds biases to the gate, up and down outputs.
    #[must_use]
    pub fn with_biases(mut self, biases: [Vec<f32>; 3]) -> Self {
        self.biases = Some(biases);
        self
    }

    /// Adds a norm of the gated activations before the down projection.
    #[must_use]
    pub fn with_sub_norm(mut self, norm: RmsNorm) -> Self {
        self.sub_norm = Some(norm);
        self
    }

    /// Width of the model side (the down projection's output).
    #[must_use]
    pub fn n_embd(&self) -> usize {
        self.down.rows()
    }

    /// Bytes of the three matrices in the backend's form.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.gate.bytes() + self.up.bytes() + self.down.bytes()
    }

    /// MLP output for normalized input `x` (one row per batch row).
    pub fn forward(&self, ctx: &Ctx<'_>, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        self.forward_rows(ctx, x, ctx.batch.len())
    }

    /// MLP output for `n` rows of normalized input `x` (an expert sees only
    /// the tokens routed to it).
    pub fn forward_rows(&self, ctx: &Ctx<'_>, x: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        Ok(Self::forward_many(ctx, &[(self, x, n)])?.pop().unwrap_or_default())
    }

    /// Several MLPs `(mlp, x, n)` side by side (the experts of a MoE
    /// layer): all gate and up products as one backend step, then all down
    /// products as another. Outputs in the same order.
    pub fn forward_many(ctx: &Ctx<'_>, mlps: &[(&Self, &[f32], usize)]) -> Result<Vec<Vec<f32>>, ModelError> {
        let gate_up: Vec<(&Matrix, &[f32], usize)> =
            mlps.iter().flat_map(|&(m, x, n)| [(&m.gate, x, n), (&m.up, x, n)]).collect();
        let mut products = ctx.matmul_many(&gate_up)?;
        let mut hidden = Vec::with_capacity(mlps.len());
        for (&(m, _, _), pair) in mlps.iter().zip(products.chunks_exact_mut(2)) {
            let (g, u) = pair.split_at_mut(1);
            let mut g = std::mem::take(&mut g[0]);
            if let Some([bg, bu, _]) = &m.biases {
                add_row_bias(&mut g, bg);
                add_row_bias(&mut u[0], bu);
            }
            ctx.backend.gated_activation(&mut g, &u[0], m.act);
            if let Some(norm) = &m.sub_norm {
                norm.apply(ctx, &mut g);
            }
            hidden.push(g);
        }
        let down: Vec<(&Matrix, &[f32], usize)> =
            mlps.iter().zip(&hidden).map(|(&(m, _, n), h)| (&m.down, h.as_slice(), n)).collect();
        let mut outs = ctx.matmul_many(&down)?;
        for (&(m, _, _), out) in mlps.iter().zip(&mut outs) {
            if let Some([_, _, bd]) = &m.biases {
                add_row_bias(out, bd);
            }
        }
        Ok(outs)
    }
}

/// A block's feed-forward part: one dense MLP, or a mixture of experts.
pub enum Ffn {
    /// Every token through the same MLP.
    Dense(GatedMlp),
    /// Each token through its routed experts (see [`crate::moe`]).
    Moe(crate::moe::MoeFfn),
}

impl Ffn {
    /// Bytes of matrices a decode step skips on average: the experts a
    /// token is not routed to.
    #[must_use]
    pub fn unrouted_bytes(&self) -> u64 {
        match self {
            Self::Dense(_) => 0,
            Self::Moe(moe) => moe.unrouted_bytes(),
        }
    }

    /// Output (`n × n_embd`) for normalized input `x`.
    pub fn forward(&self, ctx: &Ctx<'_>, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        match self {
            Self::Dense(mlp) => mlp.forward(ctx, x),
            Self::Moe(moe) => moe.forward(ctx, x),
        }
    }
}

/// Token embedding table, also the LM head when the model ties them.
pub struct Embedding {
    table: TensorRef,
}

impl Embedding {
    /// Loads `token_embd.weight`.
    pub fn load(w: &WeightLoader<'_>, cfg: &ModelConfig) -> Result<Self, ModelError> {
        Ok(Self { table: w.tensor("token_embd.weight", cfg.n_vocab, cfg.n_embd)? })
    }

    /// The table in the file (for tied LM heads).
    #[must_use]
    pub fn table(&self) -> &TensorRef {
        &self.table
    }

    /// Embeddings of the batch tokens (`n × n_embd`).
    pub fn forward(&self, ctx: &Ctx<'_>, n_embd: usize) -> Result<Vec<f32>, ModelError> {
        let vocab = self.table.rows();
        if let Some(bad) = ctx.batch.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::BadBatch(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        let mut out = vec![0.0; ctx.batch.len() * n_embd];
        ctx.backend.get_rows(&self.table.view(ctx.file), &ctx.batch.tokens, &mut out)?;
        Ok(out)
    }
}

/// Final norm + projection to the vocabulary, for the rows that want logits.
pub struct LmHead {
    norm: RmsNorm,
    output: Matrix,
}

impl LmHead {
    /// Loads `output_norm` and `output`, or the embedding table when the
    /// model ties them (no `output.weight`).
    pub fn load(w: &WeightLoader<'_>, cfg: &ModelConfig, embedding: &Embedding) -> Result<Self, ModelError> {
        let output = match w.optional_matrix("output.weight", cfg.n_vocab, cfg.n_embd)? {
            Some(m) => m,
            None => w.prepare(embedding.table())?,
        };
        Ok(Self { norm: RmsNorm::load(w, "output_norm.weight", cfg.n_embd, cfg.norm_eps)?, output })
    }

    /// Logits (`logit_rows.len() × n_vocab`) from the final hidden states.
    pub fn forward(&self, ctx: &Ctx<'_>, hidden: &[f32], n_embd: usize) -> Result<Vec<f32>, ModelError> {
        let x = self.hidden(ctx, hidden, n_embd);
        ctx.matmul_rows(&self.output, &x, ctx.batch.logit_rows.len())
    }

    /// The logit rows of the final hidden states, through the output norm.
    #[must_use]
    pub fn hidden(&self, ctx: &Ctx<'_>, hidden: &[f32], n_embd: usize) -> Vec<f32> {
        let mut x = keep_rows(hidden, &ctx.batch.logit_rows, n_embd);
        self.norm.apply(ctx, &mut x);
        x
    }
}

/// RoPE parameters for `cfg` with the given pairing style (see
/// [`ModelConfig::rope`]), with Llama 3's per-frequency divisors where the
/// file has them (`rope_freqs.weight`, `n_rot / 2` values).
pub fn rope_params(w: &WeightLoader<'_>, cfg: &ModelConfig, style: RopeStyle) -> Result<RopeParams, ModelError> {
    let mut rope = cfg.rope(style);
    rope.freq_factors = w.optional_vector("rope_freqs.weight", cfg.n_rot / 2)?.map(std::sync::Arc::from);
    Ok(rope)
}

/// Rows `rows` of `x` (rows of `dim` values), in that order.
#[must_use]
pub fn keep_rows(x: &[f32], rows: &[usize], dim: usize) -> Vec<f32> {
    rows.iter().flat_map(|&r| &x[r * dim..(r + 1) * dim]).copied().collect()
}

/// llama.cpp's last-layer pruning (`inp_out_ids`): after the last block's
/// attention only the rows wanted for logits go on, so its FFN and the head
/// see one row per sampled sequence (and sum in the one-row orders).
pub struct OutputRows {
    /// The logit rows as a batch of their own; `None` when every row is wanted.
    outputs: Option<ForwardBatch>,
    last: usize,
}

impl OutputRows {
    /// For `batch` through a model of `n_layer` blocks.
    #[must_use]
    pub fn new(batch: &ForwardBatch, n_layer: usize) -> Self {
        Self { outputs: batch.logit_rows_only(), last: n_layer.saturating_sub(1) }
    }

    /// The context for the rest of block `il` once its attention output `h`
    /// is in: at the last block, the residual `x` and `h` (rows of `dim`)
    /// are cut to the logit rows and the context covers just those.
    pub fn after_attention<'a>(
        &'a self,
        il: usize,
        ctx: Ctx<'a>,
        x: &mut Vec<f32>,
        h: &mut Vec<f32>,
        dim: usize,
    ) -> Ctx<'a> {
        match &self.outputs {
            Some(outputs) if il == self.last => {
                *x = keep_rows(x, &ctx.batch.logit_rows, dim);
                *h = keep_rows(h, &ctx.batch.logit_rows, dim);
                Ctx { batch: outputs, ..ctx }
            }
            _ => ctx,
        }
    }

    /// The context the head runs in (the pruned rows, when pruned).
    #[must_use]
    pub fn head<'a>(&'a self, ctx: Ctx<'a>) -> Ctx<'a> {
        self.outputs.as_ref().map_or(ctx, |outputs| Ctx { batch: outputs, ..ctx })
    }
}

/// `x += y`, element-wise.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
