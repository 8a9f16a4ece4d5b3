//! A GGUF `nomic-bert` file (fused QKV, rotary positions, SwiGLU) against an
//! independent numpy float64 forward pass (`fixtures/nomic_bert/reference.py`)
//! on a generated random model: pooled vectors within 1e-4, packed or alone;
//! the WordPiece vocabulary from the file tokenizes as BERT does.

use hearth_engine::embed::{EmbeddingModel, Pooling};

#[test]
fn tiny_nomic_bert_matches_the_numpy_reference() {
    let path = std::env::temp_dir().join(format!("hearth-nomic-{}.gguf", std::process::id()));
    hearth_testutil::write_tiny_nomic_bert(&path, 11).expect("write");
    let m = EmbeddingModel::load(&path, hearth_testutil::cpu_backend()).expect("load");
    assert_eq!((m.pooling, m.normalize, m.dims()), (Pooling::Mean, true, 32));
    // Words of the vocabulary between [CLS] (2) and [SEP] (3); unknown words are [UNK] (1).
    assert_eq!(m.tokenize("W10 w11 nope").unwrap(), vec![2, 10, 11, 1, 3]);
    let fixture_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/nomic_bert/vectors.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_path).expect("fixture")).expect("JSON");
    let cases: Vec<(Vec<u32>, Vec<f64>)> = fixture["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let want = c["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            (ids, want)
        })
        .collect();
    let seqs: Vec<Vec<u32>> = cases.iter().map(|(ids, _)| ids.clone()).collect();
    let packed = m.embed_tokens(&seqs).expect("embed");
    for (i, (got, (_, want))) in packed.iter().zip(&cases).enumerate() {
        let diff = got.iter().zip(want).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-4, "input {i}: max difference {diff}");
        let alone = m.embed_tokens(&seqs[i..=i]).expect("embed one");
        assert!(alone[0].iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-5), "packing changed input {i}");
    }
    let _ = std::fs::remove_file(path);
}
