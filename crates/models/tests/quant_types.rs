//! Every block type Hearth reads, summed in llama.cpp's float order: a tiny
//! random `llama` with all its matrices in one type
//! (`hearth_testutil::tiny_llama`) gives llama.cpp's top-10 logits at all 32
//! positions of a prompt, fed in one batch (prefill: llama.cpp's repacked
//! `gemm` or tiled kernels) and one token at a time (decode: its `gemv` or
//! `vec_dot`), recorded once in `fixtures/llamacpp/quant_types.json`.

use hearth_core::{ForwardBatch, GgmlType, KvType, SeqId};
use hearth_gguf::GgufFile;
use hearth_models::SequenceCache;
use sha2::{Digest, Sha256};

fn fixture() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/llamacpp/quant_types.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

/// Largest relative difference of the recorded top-10 logits from ours.
fn worst(recorded: &serde_json::Value, rows: &[Vec<f32>]) -> (f64, usize) {
    let mut worst = (0f64, 0);
    for (pos, top) in recorded.as_array().expect("positions").iter().enumerate() {
        for pair in top.as_array().expect("top-10") {
            let (id, expect) = (pair[0].as_u64().expect("id") as usize, pair[1].as_f64().expect("logit"));
            let rel = (f64::from(rows[pos][id]) - expect).abs() / expect.abs().max(1.0);
            if rel > worst.0 {
                worst = (rel, pos);
            }
        }
    }
    worst
}

/// Ours: (batch, incremental) logits per position.
fn run(ty: GgmlType) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let bytes = hearth_testutil::tiny_llama(ty, 42);
    let fx = &fixture()["models"][ty.name().to_lowercase()];
    let sha = Sha256::digest(&bytes).iter().fold(String::new(), |s, b| s + &format!("{b:02x}"));
    assert_eq!(sha, fx["sha256"].as_str().expect("sha"), "generator output changed: re-record quant_types.json");
    let model = hearth_models::load(GgufFile::from_bytes(bytes).expect("parse"), hearth_testutil::cpu_backend())
        .expect("load");
    let cfg = model.config().clone();
    let prompt = hearth_testutil::tiny_prompt();
    let mut kv = SequenceCache::new(&cfg, KvType::F16, 256).expect("kv");
    let all = kv.forward(model.as_ref(), ForwardBatch::single_all_logits(SeqId(0), &prompt, 0)).expect("forward");
    let batch = all.chunks_exact(cfg.n_vocab).map(<[f32]>::to_vec).collect();
    let mut kv = SequenceCache::new(&cfg, KvType::F16, 256).expect("kv");
    let incremental = prompt
        .iter()
        .enumerate()
        .map(|(pos, &t)| kv.forward(model.as_ref(), ForwardBatch::single(SeqId(0), &[t], pos)).expect("forward"))
        .collect();
    (batch, incremental)
}

#[test]
fn every_block_type_sums_in_llama_cpp_order() {
    let fx = fixture();
    let mut failures = Vec::new();
    for ty in hearth_testutil::TINY_LLAMA_TYPES {
        let name = ty.name().to_lowercase();
        let (batch, incremental) = run(ty);
        for (how, ours) in [("batch", &batch), ("incremental", &incremental)] {
            let (rel, pos) = worst(&fx["models"][&name][how], ours);
            eprintln!("{name:7} {how:11}: top-10 logits within {rel:.1e} of llama.cpp (worst at position {pos})");
            if rel >= 1e-5 {
                failures.push(format!("{name} {how}: {rel:.2e} at position {pos}"));
            }
        }
    }
    assert!(failures.is_empty(), "not llama.cpp's numbers: {failures:?}");
}
