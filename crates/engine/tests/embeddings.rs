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
