//! BERT encoders from a Hugging Face folder (`config.json` and
//! `model.safetensors`): the model behind sentence embeddings
//! (all-MiniLM-L6-v2 and kin) and cross-encoder rerankers (a pooler and a
//! classification head on top). Bidirectional attention within each packed
//! sequence; no KV cache. Weights are read with the `safetensors` crate;
//! matrices are prepared by the backend like any other.

use std::path::Path;
use std::sync::Arc;

use hearth_core::{
    Activation, Backend, GgmlType, MatmulJob, PackedQkv, PreparedWeight, RopeParams, RopeStyle, TokenId, WeightView,
};
use hearth_gguf::GgufFile;
use safetensors::{Dtype, SafeTensors};

use crate::ModelError;

/// The shape of a BERT encoder (`config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Vocabulary entries.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Positions the model knows.
    pub max_positions: usize,
    /// Token-type (segment) entries.
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    pub eps: f32,
    /// Rotary positions (nomic-bert) instead of a position table (BERT):
    /// the frequency base.
    pub rope_base: Option<f32>,
}

impl BertConfig {
    /// Reads `config.json`; only the BERT family with absolute positions and
    /// GELU is accepted.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::BadMetadata(m);
        let kind = v.get("model_type").and_then(serde_json::Value::as_str).unwrap_or("");
        if kind != "bert" {
            return Err(ModelError::UnsupportedArch(format!("{kind} (encoders: bert)")));
        }
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).map(|n| n as usize).ok_or_else(|| bad(format!("config.json: {k} missing")));
        if let Some(act) = v.get("hidden_act").and_then(serde_json::Value::as_str) {
            if act != "gelu" {
                return Err(bad(format!("config.json: hidden_act {act:?} is not supported (gelu)")));
            }
        }
        if let Some(p) = v.get("position_embedding_type").and_then(serde_json::Value::as_str) {
            if p != "absolute" {
                return Err(bad(format!("config.json: position_embedding_type {p:?} is not supported (absolute)")));
            }
        }
        let cfg = Self {
            vocab_size: num("vocab_size")?,
            hidden: num("hidden_size")?,
            layers: num("num_hidden_layers")?,
            heads: num("num_attention_heads")?,
            intermediate: num("intermediate_size")?,
            max_positions: num("max_position_embeddings")?,
            type_vocab_size: num("type_vocab_size").unwrap_or(2),
            eps: v.get("layer_norm_eps").and_then(serde_json::Value::as_f64).unwrap_or(1e-12) as f32,
            rope_base: None,
        };
        if cfg.heads == 0 || !cfg.hidden.is_multiple_of(cfg.heads) || cfg.layers == 0 || cfg.type_vocab_size == 0 {
            return Err(bad(format!("config.json: {} hidden units do not split into {} heads", cfg.hidden, cfg.heads)));
        }
        Ok(cfg)
    }
}

struct Dense {
    w: Box<dyn PreparedWeight>,
    /// Empty when the layer has no bias (nomic-bert).
    b: Vec<f32>,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    q: Dense,
    k: Dense,
    v: Dense,
    out: Dense,
    attn_norm: Norm,
    up: Dense,
    /// SwiGLU's gate (nomic-bert): `silu(gate) · up`; BERT has a plain GELU.
    gate: Option<Dense>,
    down: Dense,
    ffn_norm: Norm,
}

/// A cross-encoder's head: the pooler (tanh over the first token) and a
/// classifier whose first logit is the relevance score.
struct ClassifierHead {
    pooler: Dense,
    classifier: Dense,
}

/// A loaded BERT encoder.
pub struct BertEncoder {
    /// Its shape.
    pub config: BertConfig,
    backend: Arc<dyn Backend>,
    word: Vec<f32>,
    /// Absolute positions (BERT); empty with rotary positions.
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    head: Option<ClassifierHead>,
}

/// Where an encoder's tensors come from, by their Hugging Face names and
/// shapes (`[out, in]` for matrices).
trait TensorSource {
    /// Type and bytes of `name`, checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), ModelError>;
    /// The classifier's label count, if the file is a cross-encoder.
    fn classifier_labels(&self) -> Option<usize>;
    /// Whether the matrices may take the backend's fastest product (no
    /// reference engine's float order to reproduce).
    fn any_order(&self) -> bool;
}

fn shape_error(name: String, found: &[usize], expected: &[usize]) -> ModelError {
    ModelError::BadShape {
        name,
        found: found.iter().map(|&d| d as u64).collect(),
        expected: expected.iter().map(|&d| d as u64).collect(),
    }
}

/// Tensors of one safetensors file under an optional name prefix (`bert.`).
struct SafetensorsSource<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl TensorSource for SafetensorsSource<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), ModelError> {
        let full = format!("{}{name}", self.prefix);
        let t = self.st.tensor(&full).or_else(|_| self.st.tensor(name)).map_err(|_| ModelError::MissingTensor { name: full.clone() })?;
        if t.shape() != shape {
            return Err(shape_error(full, t.shape(), shape));
        }
        let ty = match t.dtype() {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => return Err(ModelError::BadMetadata(format!("tensor {full:?} has dtype {other:?} (F32, F16, BF16 only)"))),
        };
        Ok((ty, t.data()))
    }

    fn classifier_labels(&self) -> Option<usize> {
        self.st.tensor("classifier.weight").ok().map(|t| t.shape().first().copied().unwrap_or(1).max(1))
    }

    fn any_order(&self) -> bool {
        true
    }
}

/// Tensors of a GGUF `bert` file, under llama.cpp's names.
struct GgufSource<'a> {
    file: &'a GgufFile,
}

/// llama.cpp's name of the Hugging Face tensor `name`.
fn gguf_name(name: &str) -> String {
    let (stem, suffix) = name.rsplit_once('.').unwrap_or((name, ""));
    let mapped = match stem {
        "embeddings.word_embeddings" => "token_embd".to_owned(),
        "embeddings.position_embeddings" => "position_embd".to_owned(),
        "embeddings.token_type_embeddings" => "token_types".to_owned(),
        "embeddings.LayerNorm" => "token_embd_norm".to_owned(),
        "pooler.dense" => "cls".to_owned(),
        "classifier" => "cls.output".to_owned(),
        _ => match stem.strip_prefix("encoder.layer.").and_then(|r| r.split_once('.')) {
            Some((i, rest)) => {
                let part = match rest {
                    "attention.self.query" => "attn_q",
                    "attention.self.key" => "attn_k",
                    "attention.self.value" => "attn_v",
                    "attention.output.dense" => "attn_output",
                    "attention.output.LayerNorm" => "attn_output_norm",
                    "intermediate.dense" => "ffn_up",
                    "output.dense" => "ffn_down",
                    "output.LayerNorm" => "layer_output_norm",
                    "attention.self.qkv" => "attn_qkv",
                    "intermediate.gate" => "ffn_gate",
                    other => other,
                };
                format!("blk.{i}.{part}")
            }
            None => stem.to_owned(),
        },
    };
    format!("{mapped}.{suffix}")
}

impl TensorSource for GgufSource<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<(GgmlType, &[u8]), ModelError> {
        let full = gguf_name(name);
        let t = self.file.tensor(&full).ok_or_else(|| ModelError::MissingTensor { name: full.clone() })?;
        // ggml lists dimensions innermost first.
        let dims: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        if dims != shape {
            return Err(shape_error(full, &dims, shape));
        }
        Ok((t.ty, self.file.tensor_data(t)))
    }

    fn classifier_labels(&self) -> Option<usize> {
        self.file.tensor("cls.output.weight").map(|t| t.dims.get(1).copied().unwrap_or(1).max(1) as usize)
    }

    fn any_order(&self) -> bool {
        false
    }
}

/// A vector or table as f32 rows, whatever its stored type (the backend
/// dequantizes, as for any embedding lookup).
fn floats(src: &dyn TensorSource, backend: &dyn Backend, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    let (ty, data) = src.get(name, shape)?;
    let (rows, cols) = match *shape {
        [n] => (1, n),
        [r, c] => (r, c),
        _ => return Err(ModelError::BadMetadata(format!("tensor {name:?}: expected 1 or 2 dimensions"))),
    };
    let mut out = vec![0.0; rows * cols];
    let ids: Vec<TokenId> = (0..rows as TokenId).collect();
    backend.get_rows(&WeightView { ty, rows, cols, data, expert: false, any_order: false }, &ids, &mut out)?;
    Ok(out)
}

fn dense(src: &dyn TensorSource, backend: &dyn Backend, name: &str, rows: usize, cols: usize) -> Result<Dense, ModelError> {
    let (ty, data) = src.get(&format!("{name}.weight"), &[rows, cols])?;
    let w = backend.prepare(&WeightView { ty, rows, cols, data, expert: false, any_order: src.any_order() })?;
    Ok(Dense { w, b: floats(src, backend, &format!("{name}.bias"), &[rows])? })
}

/// A matrix without a bias (nomic-bert's).
fn dense_unbiased(src: &dyn TensorSource, backend: &dyn Backend, name: &str, rows: usize, cols: usize) -> Result<Dense, ModelError> {
    let (ty, data) = src.get(&format!("{name}.weight"), &[rows, cols])?;
    let w = backend.prepare(&WeightView { ty, rows, cols, data, expert: false, any_order: src.any_order() })?;
    Ok(Dense { w, b: Vec::new() })
}

/// The three `h`-row parts of a fused `3h × h` QKV matrix (nomic-bert),
/// each prepared on its own so the rest of the layer is BERT's.
fn split_qkv(src: &dyn TensorSource, backend: &dyn Backend, name: &str, h: usize) -> Result<[Dense; 3], ModelError> {
    let (ty, data) = src.get(&format!("{name}.weight"), &[3 * h, h])?;
    let part = ty.row_bytes(h).ok_or_else(|| ModelError::BadMetadata(format!("{name}: rows of {h} do not fit {ty} blocks")))? * h;
    let one = |i: usize| -> Result<Dense, ModelError> {
        let view = WeightView { ty, rows: h, cols: h, data: &data[i * part..(i + 1) * part], expert: false, any_order: src.any_order() };
        Ok(Dense { w: backend.prepare(&view)?, b: Vec::new() })
    };
    Ok([one(0)?, one(1)?, one(2)?])
}

fn norm(src: &dyn TensorSource, backend: &dyn Backend, name: &str, dim: usize) -> Result<Norm, ModelError> {
    Ok(Norm {
        w: floats(src, backend, &format!("{name}.weight"), &[dim])?,
        b: floats(src, backend, &format!("{name}.bias"), &[dim])?,
    })
}

/// GGUF encoder architectures this build reads.
pub const ENCODER_ARCHITECTURES: &[&str] = &["bert", "nomic-bert"];

impl BertConfig {
    /// The shape of a GGUF `bert` or `nomic-bert` file, from its metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let arch = file.get_str("general.architecture")?;
        if !ENCODER_ARCHITECTURES.contains(&arch) {
            return Err(ModelError::UnsupportedArch(format!("{arch} (encoders: {})", ENCODER_ARCHITECTURES.join(", "))));
        }
        let num = |k: &str| file.get_u64(&format!("{arch}.{k}")).map(|v| v as usize);
        let dim1 = |t: &str| file.tensor(t).and_then(|t| t.dims.get(1).copied()).map(|d| d as usize);
        let cfg = Self {
            vocab_size: dim1("token_embd.weight").ok_or_else(|| ModelError::MissingTensor { name: "token_embd.weight".into() })?,
            hidden: num("embedding_length")?,
            layers: num("block_count")?,
            heads: num("attention.head_count")?,
            intermediate: num("feed_forward_length")?,
            max_positions: num("context_length")?,
            type_vocab_size: dim1("token_types.weight").unwrap_or(2),
            eps: file.get_f64(&format!("{arch}.attention.layer_norm_epsilon")).unwrap_or(1e-12) as f32,
            rope_base: (arch == "nomic-bert")
                .then(|| file.get_f64("nomic-bert.rope.freq_base").map_or(1000.0, |b| b as f32)),
        };
        if cfg.heads == 0 || !cfg.hidden.is_multiple_of(cfg.heads) || cfg.layers == 0 {
            return Err(ModelError::BadMetadata(format!("{} hidden units do not split into {} heads", cfg.hidden, cfg.heads)));
        }
        Ok(cfg)
    }
}

impl BertEncoder {
    /// Loads the encoder in `dir` (`config.json`, `model.safetensors`). A
    /// `classifier` in the file makes it a cross-encoder.
    pub fn load(dir: &Path, backend: Arc<dyn Backend>) -> Result<Self, ModelError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| ModelError::BadMetadata(format!("{}: {e}", dir.join(name).display())))
        };
        let config_json: serde_json::Value = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| ModelError::BadMetadata(format!("config.json: {e}")))?;
        let config = BertConfig::from_json(&config_json)?;
        let bytes = read("model.safetensors")?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::BadMetadata(format!("model.safetensors: {e}")))?;
        let prefix = if st.tensor("embeddings.word_embeddings.weight").is_ok() { "" } else { "bert." };
        Self::from_source(&SafetensorsSource { st, prefix }, config, backend)
    }

    /// Loads a GGUF `bert` file (llama.cpp's layout: `token_embd`,
    /// `blk.N.attn_q`, …; `cls` and `cls.output` for a reranker's head).
    pub fn load_gguf(file: &GgufFile, backend: Arc<dyn Backend>) -> Result<Self, ModelError> {
        let config = BertConfig::from_gguf(file)?;
        Self::from_source(&GgufSource { file }, config, backend)
    }

    fn from_source(t: &dyn TensorSource, config: BertConfig, backend: Arc<dyn Backend>) -> Result<Self, ModelError> {
        let (h, c) = (config.hidden, &config);
        let be = backend.as_ref();
        let nomic = c.rope_base.is_some();
        let layers = (0..c.layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                if nomic {
                    let [q, k, v] = split_qkv(t, be, &format!("{p}.attention.self.qkv"), h)?;
                    return Ok(Layer {
                        q,
                        k,
                        v,
                        out: dense_unbiased(t, be, &format!("{p}.attention.output.dense"), h, h)?,
                        attn_norm: norm(t, be, &format!("{p}.attention.output.LayerNorm"), h)?,
                        up: dense_unbiased(t, be, &format!("{p}.intermediate.dense"), c.intermediate, h)?,
                        gate: Some(dense_unbiased(t, be, &format!("{p}.intermediate.gate"), c.intermediate, h)?),
                        down: dense_unbiased(t, be, &format!("{p}.output.dense"), h, c.intermediate)?,
                        ffn_norm: norm(t, be, &format!("{p}.output.LayerNorm"), h)?,
                    });
                }
                Ok(Layer {
                    q: dense(t, be, &format!("{p}.attention.self.query"), h, h)?,
                    k: dense(t, be, &format!("{p}.attention.self.key"), h, h)?,
                    v: dense(t, be, &format!("{p}.attention.self.value"), h, h)?,
                    out: dense(t, be, &format!("{p}.attention.output.dense"), h, h)?,
                    attn_norm: norm(t, be, &format!("{p}.attention.output.LayerNorm"), h)?,
                    up: dense(t, be, &format!("{p}.intermediate.dense"), c.intermediate, h)?,
                    gate: None,
                    down: dense(t, be, &format!("{p}.output.dense"), h, c.intermediate)?,
                    ffn_norm: norm(t, be, &format!("{p}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let head = match t.classifier_labels() {
            Some(labels) => Some(ClassifierHead {
                pooler: dense(t, be, "pooler.dense", h, h)?,
                classifier: dense(t, be, "classifier", labels, h)?,
            }),
            None => None,
        };
        Ok(Self {
            word: floats(t, be, "embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: if nomic {
                Vec::new()
            } else {
                floats(t, be, "embeddings.position_embeddings.weight", &[c.max_positions, h])?
            },
            token_type: floats(t, be, "embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h])?,
            embed_norm: norm(t, be, "embeddings.LayerNorm", h)?,
            layers,
            head,
            config,
            backend,
        })
    }

    /// Whether the file has a classification head (a cross-encoder).
    #[must_use]
    pub fn is_cross_encoder(&self) -> bool {
        self.head.is_some()
    }

    /// Hidden states of packed sequences: `seqs[i]` are token ids with their
    /// token types (segment 0 or 1). Returns `Σ len × hidden` floats, the rows
    /// of each sequence in order.
    pub fn forward(&self, seqs: &[(&[TokenId], &[u8])]) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        let h = c.hidden;
        let lens: Vec<usize> = seqs.iter().map(|(ids, _)| ids.len()).collect();
        let n: usize = lens.iter().sum();
        let mut x = vec![0.0f32; n * h];
        let mut row = 0;
        for (ids, types) in seqs {
            if ids.len() > c.max_positions {
                return Err(ModelError::ContextFull { limit: c.max_positions });
            }
            for (pos, (&id, &ty)) in ids.iter().zip(types.iter().chain(std::iter::repeat(&0))).enumerate() {
                let (id, ty) = (id as usize, usize::from(ty));
                if id >= c.vocab_size || ty >= c.type_vocab_size {
                    return Err(ModelError::BadBatch(format!("token {id} (type {ty}) is outside the vocabulary")));
                }
                let out = &mut x[row * h..(row + 1) * h];
                let (w, t) = (&self.word[id * h..][..h], &self.token_type[ty * h..][..h]);
                for i in 0..h {
                    out[i] = w[i] + t[i];
                }
                if let Some(p) = self.position.get(pos * h..(pos + 1) * h) {
                    out.iter_mut().zip(p).for_each(|(o, p)| *o += p);
                }
                row += 1;
            }
        }
        let be = self.backend.as_ref();
        be.layer_norm(&mut x, h, &self.embed_norm.w, &self.embed_norm.b, c.eps);
        let (mut q, mut k, mut v) = (vec![0.0; n * h], vec![0.0; n * h], vec![0.0; n * h]);
        let mut attn = vec![0.0; n * h];
        let mut proj = vec![0.0; n * h];
        let mut inter = vec![0.0; n * c.intermediate];
        let mut gate = if self.layers.iter().any(|l| l.gate.is_some()) { vec![0.0; n * c.intermediate] } else { Vec::new() };
        let head_dim = h / c.heads;
        // Rotary positions restart at 0 in every packed sequence.
        let positions: Vec<usize> = lens.iter().flat_map(|&l| 0..l).collect();
        let rope = c.rope_base.map(|base| RopeParams::plain(RopeStyle::NeoX, head_dim, base, 1.0));
        for l in &self.layers {
            be.matmul_many(&mut [
                MatmulJob { w: l.q.w.as_ref(), x: &x, n, out: &mut q },
                MatmulJob { w: l.k.w.as_ref(), x: &x, n, out: &mut k },
                MatmulJob { w: l.v.w.as_ref(), x: &x, n, out: &mut v },
            ])?;
            add_bias(&mut q, &l.q.b);
            add_bias(&mut k, &l.k.b);
            add_bias(&mut v, &l.v.b);
            if let Some(rope) = &rope {
                be.rope(&mut q, head_dim, &positions, rope);
                be.rope(&mut k, head_dim, &positions, rope);
            }
            let qkv = PackedQkv { q: &q, k: &k, v: &v, n_head: c.heads, head_dim: h / c.heads, seq_lens: &lens };
            be.encoder_attention(&qkv, &mut attn);
            be.matmul(l.out.w.as_ref(), &attn, n, &mut proj)?;
            add_bias(&mut proj, &l.out.b);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
            be.layer_norm(&mut x, h, &l.attn_norm.w, &l.attn_norm.b, c.eps);
            be.matmul(l.up.w.as_ref(), &x, n, &mut inter)?;
            add_bias(&mut inter, &l.up.b);
            let act = if let Some(g) = &l.gate {
                be.matmul(g.w.as_ref(), &x, n, &mut gate)?;
                add_bias(&mut gate, &g.b);
                be.gated_activation(&mut gate, &inter, Activation::Silu);
                &gate
            } else {
                be.gelu_erf(&mut inter);
                &inter
            };
            be.matmul(l.down.w.as_ref(), act, n, &mut proj)?;
            add_bias(&mut proj, &l.down.b);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
            be.layer_norm(&mut x, h, &l.ffn_norm.w, &l.ffn_norm.b, c.eps);
        }
        Ok(x)
    }

    /// Relevance scores of packed (query, document) pairs from the
    /// classification head: the first logit of each, through a sigmoid
    /// (sentence-transformers' default for one-label cross-encoders).
    pub fn classify(&self, seqs: &[(&[TokenId], &[u8])]) -> Result<Vec<f32>, ModelError> {
        let Some(head) = &self.head else {
            return Err(ModelError::BadMetadata("this encoder has no classification head".into()));
        };
        let h = self.config.hidden;
        let states = self.forward(seqs)?;
        // The first token ([CLS]) of each sequence.
        let mut firsts = Vec::with_capacity(seqs.len() * h);
        let mut row = 0;
        for (ids, _) in seqs {
            firsts.extend_from_slice(&states[row * h..(row + 1) * h]);
            row += ids.len();
        }
        let be = self.backend.as_ref();
        let mut pooled = vec![0.0; seqs.len() * h];
        be.matmul(head.pooler.w.as_ref(), &firsts, seqs.len(), &mut pooled)?;
        add_bias(&mut pooled, &head.pooler.b);
        pooled.iter_mut().for_each(|p| *p = p.tanh());
        let labels = head.classifier.w.rows();
        let mut logits = vec![0.0; seqs.len() * labels];
        be.matmul(head.classifier.w.as_ref(), &pooled, seqs.len(), &mut logits)?;
        add_bias(&mut logits, &head.classifier.b);
        Ok(logits.chunks_exact(labels).map(|l| 1.0 / (1.0 + (-l[0]).exp())).collect())
    }
}

/// Adds `bias` to every row of `x` (nothing for an empty bias).
fn add_bias(x: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    for row in x.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
    }
}
