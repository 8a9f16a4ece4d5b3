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
    /// RMS norm epsilon.
    pub norm_eps: f32,
    /// Sliding attention window, for architectures that use one.
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
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
        Ok(Self {
            n_vocab,
            n_ctx_train: opt_usize("context_length").unwrap_or(2048),
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
