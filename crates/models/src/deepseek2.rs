//! DeepSeek-V2/V3 (`deepseek2`): multi-head latent attention (MLA), a few
//! leading dense blocks, then mixture-of-experts blocks with shared experts.
//! Follows llama.cpp's `src/models/deepseek2.cpp` for files converted with
//! the split `attn_k_b` / `attn_v_b` tensors (its "MLA" layout).
//!
//! ```text
//! q      = W_q·h                  or  W_qb·rms_norm(W_qa·h)   (V2-Lite / V3)
//! [c; kᵣ] = W_kva·h               c: the latent (kv_lora_rank), kᵣ: one rotary key
//! c      = rms_norm(c)
//! per head i:  qᵢ = [W_kbᵢ·q_nopeᵢ ; rope(q_ropeᵢ)]       (the absorbed query)
//! K row  = [c ; rope(kᵣ)]   V row = c                     (only this row is cached)
//! oᵢ     = W_vbᵢ · softmax(qᵢ·Kᵀ · scale) V
//! out    = W_o · [o₀ … oₙ]
//! ```
//! Absorbing `W_kb` into the query and `W_vb` into the output turns the
//! attention into multi-query attention over one latent head: the cache
//! holds `kv_lora_rank + rope` values per token and layer (576 for
//! DeepSeek-V2) instead of `n_head × (k + v)` (5120 for V2-Lite's 16 heads).

use std::sync::Arc;

use hearth_core::{Activation, AttentionShape, Backend, RopeParams, RopeStyle};
use hearth_gguf::{GgufFile, MetaValue};

use crate::decoder::{Block, Decoder};
use crate::layers::{Ctx, Ffn, GatedMlp, RmsNorm, SelfAttention};
use crate::moe::{Gating, MoeConfig, MoeFfn};
use crate::weights::{Matrix, WeightLoader};
use crate::{KvStore, ModelConfig, ModelError};

/// Sizes of the latent attention, from `deepseek2.attention.*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaConfig {
    /// Rank of the query compression; 0 when queries are projected directly (V2-Lite).
    pub q_lora_rank: usize,
    /// Size of the cached latent.
    pub kv_lora_rank: usize,
    /// Per-head query/key dimensions without position (`key_length_mla − rope`).
    pub qk_nope: usize,
    /// Per-head rotary dimensions (`rope.dimension_count`), shared by all heads' keys.
    pub qk_rope: usize,
    /// Per-head value dimension after decompression (`value_length_mla`).
    pub v_head: usize,
    /// Multiplier on `q·k`: `1/√(qk_nope + qk_rope)`, times YaRN's `mscale²`.
    pub kq_scale: f32,
}

impl MlaConfig {
    /// Reads and checks the MLA sizes against the cache layout of `cfg`.
    pub fn from_gguf(file: &GgufFile, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let key = |k: &str| format!("{}.{k}", cfg.arch);
        let opt = |k: &str| file.get(&key(k)).and_then(MetaValue::as_u64).map(|v| v as usize);
        let bad = |m: String| Err(ModelError::BadMetadata(m));
        let Some(kv_lora_rank) = opt("attention.kv_lora_rank").filter(|&r| r > 0) else {
            return bad("attention.kv_lora_rank is missing".into());
        };
        let (Some(k_mla), Some(v_head)) = (opt("attention.key_length_mla"), opt("attention.value_length_mla")) else {
            return bad("this file has the legacy unsplit attn_kv_b layout (no key_length_mla); \
                 re-convert it with a current llama.cpp to get attn_k_b / attn_v_b"
                .into());
        };
        let qk_rope = cfg.n_rot;
        if k_mla <= qk_rope || v_head == 0 {
            return bad(format!("key_length_mla {k_mla} / value_length_mla {v_head} / rope {qk_rope}"));
        }
        // The cache row is [latent; rotary key], the values its latent part.
        if cfg.n_kv_head != 1 || cfg.head_dim != kv_lora_rank + qk_rope || cfg.head_dim_v != kv_lora_rank {
            return bad(format!(
                "MLA cache rows need head_count_kv 1, key_length {} and value_length {kv_lora_rank}; found {}, {}, {}",
                kv_lora_rank + qk_rope,
                cfg.n_kv_head,
                cfg.head_dim,
                cfg.head_dim_v
            ));
        }
        // llama.cpp pre-scales the scores for YaRN (its `llm_build_deepseek2`):
        // the attention factor before the rope's own magnitude correction,
        // times (1 + 0.1·log_mul·ln(1/scale)), squared.
        let rope = cfg.rope(hearth_core::RopeStyle::NeoX);
        let ln_inv_scale = (1.0 / rope.freq_scale).ln();
        let attn_factor_org = rope.attn_factor * 0.1f32.mul_add(ln_inv_scale, 1.0);
        let mscale = attn_factor_org * (0.1 * cfg.rope_scaling.yarn_log_mul).mul_add(ln_inv_scale, 1.0);
        Ok(Self {
            q_lora_rank: opt("attention.q_lora_rank").unwrap_or(0),
            kv_lora_rank,
            qk_nope: k_mla - qk_rope,
            qk_rope,
            v_head,
            kq_scale: mscale * mscale / (k_mla as f32).sqrt(),
        })
    }

    /// Query (and uncompressed key) dimension per head.
    fn q_head(&self) -> usize {
        self.qk_nope + self.qk_rope
    }
}

/// How the queries are projected.
enum QueryProjection {
    /// `W_q·h` (V2-Lite).
    Direct(Matrix),
    /// `W_qb·rms_norm(W_qa·h)` (V2, V3).
    LowRank { a: Matrix, norm: RmsNorm, b: Matrix },
}

/// Multi-head latent attention over a cache of latents (see the module docs).
pub struct LatentAttention {
    q: QueryProjection,
    /// `n_embd → kv_lora_rank + qk_rope`.
    kv_a: Matrix,
    kv_a_norm: RmsNorm,
    /// Per head, `kv_lora_rank × qk_nope`: absorbs the key decompression into the query.
    k_b: Vec<Matrix>,
    /// Per head, `v_head × kv_lora_rank`: decompresses the attended latent.
    v_b: Vec<Matrix>,
    wo: Matrix,
    dims: MlaConfig,
    shape: AttentionShape,
}

impl LatentAttention {
    /// Loads `blk.{il}.attn_*` of a DeepSeek-2 file.
    pub fn load(w: &WeightLoader<'_>, cfg: &ModelConfig, d: &MlaConfig, il: usize) -> Result<Self, ModelError> {
        let p = |s: &str| format!("blk.{il}.{s}.weight");
        let (n_embd, n_head) = (cfg.n_embd, cfg.n_head);
        let q = if d.q_lora_rank > 0 {
            QueryProjection::LowRank {
                a: w.matrix(&p("attn_q_a"), d.q_lora_rank, n_embd)?,
                norm: RmsNorm::load(w, &p("attn_q_a_norm"), d.q_lora_rank, cfg.norm_eps)?,
                b: w.matrix(&p("attn_q_b"), n_head * d.q_head(), d.q_lora_rank)?,
            }
        } else {
            QueryProjection::Direct(w.matrix(&p("attn_q"), n_head * d.q_head(), n_embd)?)
        };
        Ok(Self {
            q,
            kv_a: w.matrix(&p("attn_kv_a_mqa"), d.kv_lora_rank + d.qk_rope, n_embd)?,
            kv_a_norm: RmsNorm::load(w, &p("attn_kv_a_norm"), d.kv_lora_rank, cfg.norm_eps)?,
            k_b: w.matrices(&p("attn_k_b"), n_head, d.kv_lora_rank, d.qk_nope)?,
            v_b: w.matrices(&p("attn_v_b"), n_head, d.v_head, d.kv_lora_rank)?,
            wo: w.matrix(&p("attn_output"), n_embd, n_head * d.v_head)?,
            dims: *d,
            shape: AttentionShape {
                n_head,
                n_kv_head: 1,
                head_dim: d.kv_lora_rank + d.qk_rope,
                v_head_dim: d.kv_lora_rank,
                scale: d.kq_scale,
                softcap: 0.0,
            },
        })
    }
}

/// Splits every `a + b`-element row of `x` into its first `a` and last `b` elements.
fn split_rows(x: &[f32], a: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / (a + b);
    let (mut first, mut second) = (Vec::with_capacity(rows * a), Vec::with_capacity(rows * b));
    for row in x.chunks_exact(a + b) {
        first.extend_from_slice(&row[..a]);
        second.extend_from_slice(&row[a..]);
    }
    (first, second)
}

/// Rows `[x_i ; y_i]` from rows of `a` and `b` elements.
fn join_rows(x: &[f32], a: usize, y: &[f32], b: usize) -> Vec<f32> {
    x.chunks_exact(a).zip(y.chunks_exact(b)).flat_map(|(x, y)| x.iter().chain(y)).copied().collect()
}

/// `n × heads × dim` (token-major) into one `n × dim` matrix per head.
fn gather_heads(x: &[f32], n: usize, heads: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut by_head: Vec<Vec<f32>> = (0..heads).map(|_| Vec::with_capacity(n * dim)).collect();
    for row in x.chunks_exact(heads * dim) {
        for (h, head) in by_head.iter_mut().zip(row.chunks_exact(dim)) {
            h.extend_from_slice(head);
        }
    }
    by_head
}

/// One `n × dim` matrix per head back to `n × heads × dim`.
fn scatter_heads(by_head: &[Vec<f32>], n: usize, dim: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n * by_head.len() * dim);
    for t in 0..n {
        for h in by_head {
            x.extend_from_slice(&h[t * dim..(t + 1) * dim]);
        }
    }
    x
}

impl SelfAttention for LatentAttention {
    /// Attention output (`n × n_embd`) for normalized input `x`; caches this
    /// layer's latent rows for the batch in `kv`.
    fn forward(
        &self,
        ctx: &Ctx<'_>,
        kv: &mut KvStore,
        il: usize,
        x: &[f32],
        rope: &RopeParams,
        _window: Option<usize>,
    ) -> Result<Vec<f32>, ModelError> {
        let d = &self.dims;
        let (n, n_head, lora, r) = (ctx.batch.len(), self.shape.n_head, d.kv_lora_rank, d.qk_rope);
        let positions = &ctx.batch.positions;
        let (q, kv_a) = match &self.q {
            QueryProjection::Direct(wq) => {
                let [q, kv_a] = ctx.matmul_array([(wq, x, n), (&self.kv_a, x, n)])?;
                (q, kv_a)
            }
            QueryProjection::LowRank { a, norm, b } => {
                let [mut qa, kv_a] = ctx.matmul_array([(a, x, n), (&self.kv_a, x, n)])?;
                norm.apply(ctx, &mut qa);
                (ctx.matmul(b, &qa)?, kv_a)
            }
        };

        // Cache row: [rms_norm(latent) ; rope(rotary key)].
        let (mut latent, mut k_rope) = split_rows(&kv_a, lora, r);
        self.kv_a_norm.apply(ctx, &mut latent);
        ctx.backend.rope(&mut k_rope, r, positions, rope);
        let keys = join_rows(&latent, lora, &k_rope, r);
        kv.write(ctx.backend, il, ctx.kv_rows, &keys, &[]);

        // Queries: the position-free part absorbed into latent space per head.
        let (q_nope, mut q_rope) = split_rows(&q, d.qk_nope, r);
        ctx.backend.rope(&mut q_rope, r, positions, rope);
        let q_nope_by_head = gather_heads(&q_nope, n, n_head, d.qk_nope);
        let absorbed = ctx.matmul_many(
            &self.k_b.iter().zip(&q_nope_by_head).map(|(k_b, q)| (k_b, q.as_slice(), n)).collect::<Vec<_>>(),
        )?;
        let absorbed = scatter_heads(&absorbed, n, lora);
        let queries = join_rows(&absorbed, lora, &q_rope, r);

        let mut attended = vec![0.0; n * n_head * lora];
        let spans = KvStore::spans(ctx.batch, None);
        ctx.backend.attention(&queries, &self.shape, &kv.layer(il), &spans, None, &mut attended);

        // Each head's attended latent back to its value space, then W_o.
        let by_head = gather_heads(&attended, n, n_head, lora);
        let values =
            ctx.matmul_many(&self.v_b.iter().zip(&by_head).map(|(v_b, o)| (v_b, o.as_slice(), n)).collect::<Vec<_>>())?;
        ctx.matmul(&self.wo, &scatter_heads(&values, n, d.v_head))
    }
}

/// Loads a `deepseek2` GGUF (MLA layout).
pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Decoder, ModelError> {
    let cfg = ModelConfig::from_gguf(&file)?;
    let mla = MlaConfig::from_gguf(&file, &cfg)?;
    // DeepSeek defaults: softmax gating, weights left unnormalized (V3 files say otherwise).
    let moe = MoeConfig::from_gguf(&file, &cfg, false, Gating::Softmax)?
        .ok_or_else(|| ModelError::BadMetadata(format!("{}.expert_count is missing", cfg.arch)))?;
    let dense_lead = file
        .get(&format!("{}.leading_dense_block_count", cfg.arch))
        .and_then(MetaValue::as_u64)
        .map_or(0, |v| v as usize);
    Decoder::load_with_blocks(file, backend, RopeStyle::Normal, |w, cfg, il| {
        let norm = |name: &str| RmsNorm::load(w, &format!("blk.{il}.{name}.weight"), cfg.n_embd, cfg.norm_eps);
        let ffn = if il < dense_lead {
            Ffn::Dense(GatedMlp::load(w, cfg, il, Activation::Silu)?)
        } else {
            Ffn::Moe(MoeFfn::load(w, cfg, &moe, il)?)
        };
        Ok(Block {
            attn_norm: norm("attn_norm")?,
            attn: Box::new(LatentAttention::load(w, cfg, &mla, il)?),
            ffn_norm: norm("ffn_norm")?,
            ffn,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_gather_and_scatter_are_inverse() {
        let x: Vec<f32> = (0..2 * 3 * 4).map(|v| v as f32).collect();
        let heads = gather_heads(&x, 2, 3, 4);
        assert_eq!(heads[1], [4.0, 5.0, 6.0, 7.0, 16.0, 17.0, 18.0, 19.0]);
        assert_eq!(scatter_heads(&heads, 2, 4), x);
    }

    #[test]
    fn rows_split_and_join() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (a, b) = split_rows(&x, 2, 1);
        assert_eq!((a.as_slice(), b.as_slice()), ([1.0, 2.0, 4.0, 5.0].as_slice(), [3.0, 6.0].as_slice()));
        assert_eq!(join_rows(&a, 2, &b, 1), x);
    }
}
