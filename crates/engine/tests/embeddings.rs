//! all-MiniLM-L6-v2 (a BERT encoder from a Hugging Face folder) against the
//! sentence-transformers vectors in `../shared/reference/minilm.json`.

use std::path::PathBuf;
use std::sync::Arc;

use hearth_engine::embed::{EmbedHandle, EmbedJob, EmbeddingModel, Pooling};

fn reference() -> serde_json::Value {
    let dir = std::env::var_os("HEARTH_SHARED")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"), PathBuf::from);
    let path = dir.join("reference/minilm.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("reference JSON")
}

fn minilm() -> EmbeddingModel {
    EmbeddingModel::load(&hearth_testutil::real_model("minilm"), hearth_testutil::cpu_backend()).expect("minilm")
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_sentence_transformers() {
    let r = reference();
    let m = minilm();
    assert_eq!((m.pooling, m.normalize, m.max_tokens, m.dims()), (Pooling::Mean, true, 256, 384));
    let sentences: Vec<&str> = r["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let want: Vec<Vec<f64>> =
        r["embeddings"].as_array().unwrap().iter().map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect();
    // All sentences in one packed pass, and each alone: the same vectors.
    let seqs: Vec<Vec<u32>> = sentences.iter().map(|s| m.tokenize(s).unwrap()).collect();
    let together = m.embed_tokens(&seqs).unwrap();
    for (i, (got, want)) in together.iter().zip(&want).enumerate() {
        let c = cosine(got, want);
        assert!(c >= 0.999, "sentence {i} {:?}: cosine {c}", sentences[i]);
        let alone = m.embed_tokens(&seqs[i..=i]).unwrap();
        let d: f32 = alone[0].iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "packing changed sentence {i} by {d}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn the_worker_batches_jobs_and_truncation_keeps_the_end_token() {
    let m = Arc::new(minilm());
    let long = m.tokenize(&"word ".repeat(400)).unwrap();
    assert!(long.len() > 256);
    let cut = m.truncate(long.clone());
    assert_eq!((cut.len(), cut.last()), (256, long.last()));
    let handle = EmbedHandle::spawn(Arc::clone(&m));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let jobs: Vec<_> = (0..8)
            .map(|i| {
                let h = handle.clone();
                let ids = m.tokenize(&format!("sentence number {i}")).unwrap();
                async move { h.run(EmbedJob::Embed(vec![ids])).await }
            })
            .collect();
        let out = futures_join(jobs).await;
        for v in out {
            assert_eq!(v.unwrap()[0].len(), 384);
        }
    });
}

async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await);
    }
    out
}

#[test]
fn a_decoder_model_embeds_with_its_final_hidden_states() {
    use hearth_engine::LoadedModel;
    let s = LoadedModel::load(&hearth_testutil::real_model("smollm2"), hearth_testutil::cpu_backend()).expect("smollm2");
    assert_eq!(s.pooling(), Pooling::Last);
    let embed = |t: &str, p| s.embed(&s.raw_prompt(t).unwrap(), p).unwrap();
    let a = embed("The cat sat on the mat.", Pooling::Last);
    assert_eq!(a.len(), s.model.config().n_embd);
    assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    assert_eq!(a, embed("The cat sat on the mat.", Pooling::Last), "deterministic");
    // More than one step's budget of tokens: chunks through the cache.
    let long = "The history of the hearth is long. ".repeat(80);
    let tokens = s.raw_prompt(&long).unwrap();
    assert!(tokens.len() > hearth_engine::batching::EngineConfig::TOKEN_BUDGET);
    for p in [Pooling::Last, Pooling::Mean] {
        let v = s.embed(&tokens, p).unwrap();
        assert!(v.iter().all(|x| x.is_finite()) && (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    }
    // With one token, mean and last pooling agree.
    let short = s.raw_prompt("The cat sat").unwrap();
    let mean_of_one = s.embed(&short[..1], Pooling::Mean).unwrap();
    let last_of_one = s.embed(&short[..1], Pooling::Last).unwrap();
    assert!(mean_of_one.iter().zip(&last_of_one).all(|(x, y)| (x - y).abs() < 1e-5));
}

/// all-MiniLM-L6-v2 written as a GGUF `bert` file the way llama.cpp's
/// converter lays it out (tensor names, metadata, "phantom space"
/// vocabulary), with matrices in `ty`.
fn minilm_as_gguf(ty: hearth_core::GgmlType) -> std::path::PathBuf {
    use hearth_gguf::{GgufWriter, MetaValue, MetaValueType};
    let dir = hearth_testutil::real_model("minilm");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut g = GgufWriter::new();
    g.set("general.architecture", MetaValue::String("bert".into()));
    for (k, v) in [("embedding_length", 384), ("block_count", 6), ("attention.head_count", 12), ("feed_forward_length", 1536), ("context_length", 512), ("pooling_type", 1)] {
        g.set(&format!("bert.{k}"), MetaValue::U32(v));
    }
    g.set("bert.attention.layer_norm_epsilon", MetaValue::F32(1e-12));
    let tj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    let mut vocab: Vec<(String, u64)> =
        tj["model"]["vocab"].as_object().unwrap().iter().map(|(t, i)| (t.clone(), i.as_u64().unwrap())).collect();
    vocab.sort_by_key(|&(_, i)| i);
    let phantom = |t: &str| {
        if t.starts_with('[') && t.ends_with(']') {
            t.to_owned()
        } else if let Some(rest) = t.strip_prefix("##") {
            rest.to_owned()
        } else {
            format!("\u{2581}{t}")
        }
    };
    let tokens = vocab.iter().map(|(t, _)| MetaValue::String(phantom(t))).collect();
    g.set("tokenizer.ggml.model", MetaValue::String("bert".into()));
    g.set("tokenizer.ggml.tokens", MetaValue::Array(MetaValueType::String, tokens));
    g.set("tokenizer.ggml.cls_token_id", MetaValue::U32(101));
    g.set("tokenizer.ggml.seperator_token_id", MetaValue::U32(102));
    g.set("tokenizer.ggml.unknown_token_id", MetaValue::U32(100));
    g.set("tokenizer.ggml.padding_token_id", MetaValue::U32(0));
    for (name, t) in st.tensors() {
        if name == "embeddings.position_ids" {
            continue;
        }
        let gguf_name = name
            .replace("embeddings.word_embeddings", "token_embd")
            .replace("embeddings.position_embeddings", "position_embd")
            .replace("embeddings.token_type_embeddings", "token_types")
            .replace("embeddings.LayerNorm", "token_embd_norm")
            .replace("encoder.layer.", "blk.")
            .replace(".attention.self.query", ".attn_q")
            .replace(".attention.self.key", ".attn_k")
            .replace(".attention.self.value", ".attn_v")
            .replace(".attention.output.dense", ".attn_output")
            .replace(".attention.output.LayerNorm", ".attn_output_norm")
            .replace(".intermediate.dense", ".ffn_up")
            .replace(".output.dense", ".ffn_down")
            .replace(".output.LayerNorm", ".layer_output_norm")
            .replace(".gamma", ".weight")
            .replace(".beta", ".bias");
        let dims: Vec<u64> = t.shape().iter().rev().map(|&d| d as u64).collect();
        let floats: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let is_matrix = dims.len() == 2 && gguf_name.starts_with("blk.");
        let (ty, data) = if is_matrix && ty == hearth_core::GgmlType::F16 {
            (ty, floats.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect())
        } else {
            (hearth_core::GgmlType::F32, t.data().to_vec())
        };
        g.add_tensor(&gguf_name, &dims, ty, data);
    }
    let path = std::env::temp_dir().join(format!("hearth-minilm-{}-{ty}.gguf", std::process::id()));
    g.write_to(&path).unwrap();
    path
}

#[test]
fn a_gguf_bert_file_embeds_like_the_hugging_face_folder() {
    let r = reference();
    let folder = minilm();
    let sentences: Vec<&str> = r["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    for ty in [hearth_core::GgmlType::F32, hearth_core::GgmlType::F16] {
        let path = minilm_as_gguf(ty);
        let gguf = EmbeddingModel::load(&path, hearth_testutil::cpu_backend()).expect("gguf bert");
        assert_eq!((gguf.pooling, gguf.normalize, gguf.dims()), (Pooling::Mean, true, 384));
        for s in &sentences {
            let (a, b) = (folder.tokenize(s).unwrap(), gguf.tokenize(s).unwrap());
            assert_eq!(a, b, "token ids of {s:?}");
            let (va, vb) = (&folder.embed_tokens(&[a]).unwrap()[0], &gguf.embed_tokens(&[b]).unwrap()[0]);
            let cos: f32 = va.iter().zip(vb).map(|(x, y)| x * y).sum();
            assert!(cos > 0.9999, "{ty}: {s:?}: cosine {cos}");
        }
        let _ = std::fs::remove_file(path);
    }
}
