//! A deterministic random-weight BERT cross-encoder in Hugging Face's layout
//! (`config.json`, `model.safetensors`; tensor names as
//! `BertForSequenceClassification` saves them), for testing the encoder and
//! rerank path against an independent reference computation
//! (`fixtures/cross_encoder/reference.py`).

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{serialize_to_file, Dtype, View};

/// Shape of the tiny cross-encoder.
pub const CE_VOCAB: usize = 100;
const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const INTER: usize = 64;
const POSITIONS: usize = 64;

struct F32Tensor {
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &F32Tensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes the cross-encoder of `seed` into `dir` (created if missing).
pub fn write_tiny_cross_encoder(dir: &Path, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensors: Vec<(String, F32Tensor)> = Vec::new();
    let mut add = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let data = (0..n).flat_map(|_| (offset + rng.gen_range(-scale..scale)).to_le_bytes()).collect();
        tensors.push((name, F32Tensor { shape: shape.to_vec(), data }));
    };
    let h = HIDDEN;
    add("bert.embeddings.word_embeddings.weight".into(), &[CE_VOCAB, h], 0.5, 0.0);
    add("bert.embeddings.position_embeddings.weight".into(), &[POSITIONS, h], 0.1, 0.0);
    add("bert.embeddings.token_type_embeddings.weight".into(), &[2, h], 0.1, 0.0);
    add("bert.embeddings.LayerNorm.weight".into(), &[h], 0.1, 1.0);
    add("bert.embeddings.LayerNorm.bias".into(), &[h], 0.1, 0.0);
    for l in 0..LAYERS {
        let p = format!("bert.encoder.layer.{l}");
        for m in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            add(format!("{p}.{m}.weight"), &[h, h], 0.3, 0.0);
            add(format!("{p}.{m}.bias"), &[h], 0.1, 0.0);
        }
        add(format!("{p}.attention.output.LayerNorm.weight"), &[h], 0.1, 1.0);
        add(format!("{p}.attention.output.LayerNorm.bias"), &[h], 0.1, 0.0);
        add(format!("{p}.intermediate.dense.weight"), &[INTER, h], 0.3, 0.0);
        add(format!("{p}.intermediate.dense.bias"), &[INTER], 0.1, 0.0);
        add(format!("{p}.output.dense.weight"), &[h, INTER], 0.3, 0.0);
        add(format!("{p}.output.dense.bias"), &[h], 0.1, 0.0);
        add(format!("{p}.output.LayerNorm.weight"), &[h], 0.1, 1.0);
        add(format!("{p}.output.LayerNorm.bias"), &[h], 0.1, 0.0);
    }
    add("bert.pooler.dense.weight".into(), &[h, h], 0.3, 0.0);
    add("bert.pooler.dense.bias".into(), &[h], 0.1, 0.0);
    add("classifier.weight".into(), &[1, h], 0.5, 0.0);
    add("classifier.bias".into(), &[1], 0.1, 0.0);
    let views: Vec<(&str, &F32Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    serialize_to_file(views, None, &dir.join("model.safetensors")).map_err(std::io::Error::other)?;
    let config = format!(
        r#"{{"architectures": ["BertForSequenceClassification"], "model_type": "bert", "hidden_act": "gelu",
"hidden_size": {h}, "num_hidden_layers": {LAYERS}, "num_attention_heads": {HEADS}, "intermediate_size": {INTER},
"max_position_embeddings": {POSITIONS}, "type_vocab_size": 2, "vocab_size": {CE_VOCAB}, "layer_norm_eps": 1e-12,
"position_embedding_type": "absolute", "num_labels": 1}}"#
    );
    std::fs::write(dir.join("config.json"), config)
}

/// Writes a deterministic random-weight `nomic-bert` GGUF file (llama.cpp's
/// layout: fused bias-free QKV, rotary positions with base 1000, SwiGLU,
/// post-norm) to `path`, with a WordPiece vocabulary of `[PAD] [UNK] [CLS]
/// [SEP]` and 96 words. Checked against `fixtures/nomic_bert/reference.py`.
pub fn write_tiny_nomic_bert(path: &Path, seed: u64) -> std::io::Result<()> {
    use hearth_core::GgmlType;
    use hearth_gguf::{GgufWriter, MetaValue, MetaValueType};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut g = GgufWriter::new();
    let arch = "nomic-bert";
    g.set("general.architecture", MetaValue::String(arch.into()));
    for (k, v) in [
        ("embedding_length", HIDDEN),
        ("block_count", LAYERS),
        ("attention.head_count", HEADS),
        ("feed_forward_length", INTER),
        ("context_length", POSITIONS),
        ("pooling_type", 1),
    ] {
        g.set(&format!("{arch}.{k}"), MetaValue::U32(v as u32));
    }
    g.set(&format!("{arch}.attention.layer_norm_epsilon"), MetaValue::F32(1e-12));
    g.set(&format!("{arch}.rope.freq_base"), MetaValue::F32(1000.0));
    let mut tokens = vec!["[PAD]".to_owned(), "[UNK]".to_owned(), "[CLS]".to_owned(), "[SEP]".to_owned()];
    tokens.extend((4..CE_VOCAB).map(|i| format!("\u{2581}w{i}")));
    g.set("tokenizer.ggml.model", MetaValue::String("bert".into()));
    g.set("tokenizer.ggml.tokens", MetaValue::Array(MetaValueType::String, tokens.into_iter().map(MetaValue::String).collect()));
    g.set("tokenizer.ggml.cls_token_id", MetaValue::U32(2));
    g.set("tokenizer.ggml.seperator_token_id", MetaValue::U32(3));
    g.set("tokenizer.ggml.unknown_token_id", MetaValue::U32(1));
    let h = HIDDEN;
    let mut add = |name: &str, shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let data: Vec<u8> = (0..n).flat_map(|_| (offset + rng.gen_range(-scale..scale)).to_le_bytes()).collect();
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        g.add_tensor(name, &dims, GgmlType::F32, data);
    };
    add("token_embd.weight", &[CE_VOCAB, h], 0.5, 0.0);
    add("token_types.weight", &[2, h], 0.1, 0.0);
    add("token_embd_norm.weight", &[h], 0.1, 1.0);
    add("token_embd_norm.bias", &[h], 0.1, 0.0);
    for l in 0..LAYERS {
        add(&format!("blk.{l}.attn_qkv.weight"), &[3 * h, h], 0.3, 0.0);
        add(&format!("blk.{l}.attn_output.weight"), &[h, h], 0.3, 0.0);
        add(&format!("blk.{l}.attn_output_norm.weight"), &[h], 0.1, 1.0);
        add(&format!("blk.{l}.attn_output_norm.bias"), &[h], 0.1, 0.0);
        add(&format!("blk.{l}.ffn_up.weight"), &[INTER, h], 0.3, 0.0);
        add(&format!("blk.{l}.ffn_gate.weight"), &[INTER, h], 0.3, 0.0);
        add(&format!("blk.{l}.ffn_down.weight"), &[h, INTER], 0.3, 0.0);
        add(&format!("blk.{l}.layer_output_norm.weight"), &[h], 0.1, 1.0);
        add(&format!("blk.{l}.layer_output_norm.bias"), &[h], 0.1, 0.0);
    }
    g.write_to(path)
}
