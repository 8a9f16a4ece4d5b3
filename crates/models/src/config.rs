//! Hyper-parameters read from GGUF metadata (`{arch}.*` keys, llama.cpp names).

use hearth_gguf::GgufFile;

use crate::ModelError;

/// Shape and numerics of a decoder-only transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `general.architecture`.
    pub arch: String,
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Feed-forward inner size.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Dimension of each query and key head (`attention.key_length`).
    pub head_dim: usize,
    /// Dimension of each value head (`attention.value_length`).
    pub head_dim_v: usize,
    /// The cached values are the leading `head_dim_v` elements of each key
    /// row (multi-head latent attention caches one latent vector per token).
    pub values_in_keys: bool,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RoPE linear scaling (`1 / factor`).
    pub rope_freq_scale: f32,
    /// RoPE scaling beyond the frequency scale (`rope.scaling.*`).
    pub rope_scaling: RopeScaling,
    /// RMS norm epsilon.
    pub norm_eps: f32,
    /// Sliding attention window, for architectures that use one.
    pub sliding_window: Option<usize>,
}

/// How a file scales RoPE past its training context (`rope.scaling.type` and
/// its companions, as llama.cpp reads them).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeScaling {
    /// `rope.scaling.type`: `none`, `linear` (the default), `yarn`, `longrope`.
    pub kind: String,
    /// Context the frequencies were trained for (`original_context_length`,
    /// else the training context).
    pub n_ctx_orig: usize,
    /// `rope.scaling.attn_factor` (1 unless given).
    pub attn_factor: f32,
    /// `yarn_ext_factor`, when the file sets it (else 1 for YaRN, 0 otherwise).
    pub yarn_ext_factor: Option<f32>,
    /// `yarn_attn_factor` (1 unless given).
    pub yarn_attn_factor: f32,
    /// `yarn_beta_fast` / `yarn_beta_slow` (32 and 1 unless given).
    pub yarn_beta: (f32, f32),
    /// `yarn_log_multiplier` (0 unless given).
    pub yarn_log_mul: f32,
}

impl ModelConfig {
    /// The architecture's metadata value `{arch}.{name}` as f32, if present
    /// and numeric (the one reader of optional per-architecture numbers).
    #[must_use]
    pub fn arch_f32(&self, file: &GgufFile, name: &str) -> Option<f32> {
        file.get(&format!("{}.{name}", self.arch)).and_then(hearth_gguf::MetaValue::as_f64).map(|v| v as f32)
    }

    /// RoPE parameters in `style`: the frequency ladder, linear scale and,
    /// for YaRN files, the extrapolation mix and attention factor llama.cpp
    /// derives (`llama_context`'s `yarn_attn_factor`).
    #[must_use]
    pub fn rope(&self, style: hearth_core::RopeStyle) -> hearth_core::RopeParams {
        let r = &self.rope_scaling;
        let freq_scale = if r.kind == "none" { 1.0 } else { self.rope_freq_scale };
        let ext_factor = r.yarn_ext_factor.unwrap_or(if r.kind == "yarn" { 1.0 } else { 0.0 });
        let mut attn_factor = r.yarn_attn_factor;
        if ext_factor != 0.0 {
            let get_mscale = |scale: f32, mscale: f32| {
                if scale <= 1.0 {
                    1.0
                } else {
                    (0.1 * mscale).mul_add(scale.ln(), 1.0)
                }
            };
            let factor = 1.0 / freq_scale;
            attn_factor = if r.yarn_log_mul == 0.0 {
                get_mscale(factor, 1.0)
            } else {
                // DeepSeek-V2 files carry mscale = mscale_all_dims.
                let mscale = if self.arch == "deepseek2" { r.yarn_log_mul } else { 1.0 };
                get_mscale(factor, mscale) / get_mscale(factor, r.yarn_log_mul)
            };
            // ggml's rope multiplies by (1 + 0.1·ln factor) again: cancelled here, as llama.cpp does.
            attn_factor *= 1.0 / 0.1f32.mul_add(factor.ln(), 1.0);
        }
        attn_factor *= r.attn_factor;
        hearth_core::RopeParams::plain(style, self.n_rot, self.rope_base, freq_scale).with_yarn(
            ext_factor,
            attn_factor,
            r.n_ctx_orig,
            r.yarn_beta.0,
            r.yarn_beta.1,
        )
    }

    /// Reads the configuration of `file`'s architecture.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let arch = file.get_str("general.architecture")?.to_owned();
        let key = |k: &str| format!("{arch}.{k}");
        let usize_key = |k: &str| -> Result<usize, ModelError> { Ok(file.get_u64(&key(k))? as usize) };
        let opt_usize = |k: &str| file.get(&key(k)).and_then(hearth_gguf::MetaValue::as_u64).map(|v| v as usize);
        let opt_f32 = |k: &str| file.get(&key(k)).and_then(hearth_gguf::MetaValue::as_f64).map(|v| v as f32);

        let n_embd = usize_key("embedding_length")?;
        let n_head = usize_key("attention.head_count")?;
        if n_head == 0 || n_embd == 0 {
            return Err(ModelError::BadMetadata("embedding_length and head_count must be positive".into()));
        }
        let n_kv_head = opt_usize("attention.head_count_kv").unwrap_or(n_head);
        if n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(ModelError::BadMetadata(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_kv_head}"
            )));
        }
        let head_dim = opt_usize("attention.key_length").unwrap_or(n_embd / n_head);
        let head_dim_v = opt_usize("attention.value_length").unwrap_or(head_dim);
        // DeepSeek's MLA files: K is [latent; rotary part], V the latent.
        let values_in_keys = file.get(&key("attention.key_length_mla")).is_some();
        if head_dim_v == 0 || (values_in_keys && head_dim_v > head_dim) {
            return Err(ModelError::BadMetadata(format!(
                "attention.value_length {head_dim_v} invalid for key length {head_dim}"
            )));
        }
        let n_rot = opt_usize("rope.dimension_count").unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(ModelError::BadMetadata(format!(
                "rope.dimension_count {n_rot} invalid for head size {head_dim}"
            )));
        }
        let n_vocab = match opt_usize("vocab_size") {
            Some(v) => v,
            None => file.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let scaling_factor = opt_f32("rope.scaling.factor").filter(|f| *f > 0.0).unwrap_or(1.0);
        let n_ctx_train = opt_usize("context_length").unwrap_or(2048);
        let kind = file.get_str(&key("rope.scaling.type")).unwrap_or("linear").to_owned();
        if !["none", "linear", "yarn", "longrope"].contains(&kind.as_str()) {
            return Err(ModelError::BadMetadata(format!("rope.scaling.type {kind:?} is not one of none, linear, yarn, longrope")));
        }
        let rope_scaling = RopeScaling {
            kind,
            n_ctx_orig: opt_usize("rope.scaling.original_context_length").filter(|n| *n > 0).unwrap_or(n_ctx_train),
            attn_factor: opt_f32("rope.scaling.attn_factor").unwrap_or(1.0),
            yarn_ext_factor: opt_f32("rope.scaling.yarn_ext_factor").filter(|f| *f >= 0.0),
            yarn_attn_factor: opt_f32("rope.scaling.yarn_attn_factor").filter(|f| *f >= 0.0).unwrap_or(1.0),
            yarn_beta: (
                opt_f32("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
                opt_f32("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
            ),
            // DeepSeek-2 files store 0.1·mscale_all_dim (llama.cpp divides it back out).
            yarn_log_mul: opt_f32("rope.scaling.yarn_log_multiplier")
                .map_or(0.0, |m| if arch == "deepseek2" { m / 0.1 } else { m }),
        };
        Ok(Self {
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer: usize_key("block_count")?,
            // MoE files may give only the expert size (checked by the FFN loaders).
            n_ff: opt_usize("feed_forward_length").unwrap_or(0),
            n_head,
            n_kv_head,
            head_dim,
            head_dim_v,
            values_in_keys,
            n_rot,
            rope_base: opt_f32("rope.freq_base").unwrap_or(10_000.0),
            rope_freq_scale: 1.0 / scaling_factor,
            rope_scaling,
            norm_eps: opt_f32("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            sliding_window: opt_usize("attention.sliding_window"),
            arch,
        })
    }

    /// Floats of K per token per layer.
    #[must_use]
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Floats of V per token per layer.
    #[must_use]
    pub fn kv_dim_v(&self) -> usize {
        self.n_kv_head * self.head_dim_v
    }

    /// Floats the KV cache holds per token per layer: keys and values, or
    /// keys alone where the values are part of them.
    #[must_use]
    pub fn kv_floats_per_layer(&self) -> usize {
        if self.values_in_keys {
            self.kv_dim()
        } else {
            self.kv_dim() + self.kv_dim_v()
        }
    }
}
