//! The BERT cross-encoder path against an independent numpy forward pass
//! (`fixtures/cross_encoder/reference.py`, float64) on a generated random
//! cross-encoder: scores within 1e-4, packed or alone.

use hearth_models::bert::BertEncoder;

#[test]
fn tiny_cross_encoder_scores_match_the_numpy_reference() {
    let dir = std::env::temp_dir().join(format!("hearth-ce-{}", std::process::id()));
    hearth_testutil::write_tiny_cross_encoder(&dir, 7).expect("write");
    let enc = BertEncoder::load(&dir, hearth_testutil::cpu_backend()).expect("load");
    assert!(enc.is_cross_encoder());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cross_encoder/scores.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    let pairs: Vec<(Vec<u32>, Vec<u8>, f64)> = fixture["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let types = p["types"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
            (ids, types, p["score"].as_f64().unwrap())
        })
        .collect();
    let packed: Vec<(&[u32], &[u8])> = pairs.iter().map(|(i, t, _)| (i.as_slice(), t.as_slice())).collect();
    let together = enc.classify(&packed).expect("classify");
    for (k, (got, (_, _, want))) in together.iter().zip(&pairs).enumerate() {
        assert!((f64::from(*got) - want).abs() < 1e-4, "pair {k}: {got} vs {want}");
        let alone = enc.classify(&packed[k..=k]).expect("classify one");
        assert!((alone[0] - got).abs() < 1e-6, "packing changed pair {k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
