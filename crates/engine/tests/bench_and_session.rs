//! Engine pieces that need no downloaded model: a generated tiny model
//! loaded from disk through the same path as real files.

use hearth_engine::batching::EngineConfig;
use hearth_engine::{bench, LoadedModel};
use hearth_sampling::SamplingParams;

/// Each test writes its own file: another test's rewrite must never race a map.
fn tiny_session(test: &str) -> LoadedModel {
    let dir = std::env::temp_dir().join(format!("hearth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("tiny-qwen2-{test}.gguf"));
    std::fs::write(&path, hearth_testutil::tiny_qwen("qwen2", 42)).unwrap();
    LoadedModel::load(&path, hearth_testutil::cpu_backend()).expect("tiny model loads as a session")
}

#[test]
fn bench_reports_positive_rates() {
    let s = tiny_session("bench");
    let pp = bench::prefill(&s, &EngineConfig::single(128), 16, 2, 1).unwrap();
    let tg = bench::decode(&s, &EngineConfig::single(128), 8, 2, 1).unwrap();
    assert_eq!((pp.test.as_str(), tg.test.as_str()), ("pp16", "tg8"));
    assert!(pp.tokens_per_s > 0.0 && tg.tokens_per_s > 0.0 && pp.median > 0.0);
    assert!(bench::weight_bytes_per_token(&s) > 0);
}

#[test]
fn seeded_sampling_is_reproducible_and_max_tokens_is_honoured() {
    let s = tiny_session("seeded");
    let prompt = s.tokenizer.encode("hello world", true).unwrap();
    let params = SamplingParams { temperature: 1.0, seed: 7, max_tokens: 12, ..SamplingParams::default() };
    let a = s.generate(&prompt, &params, &EngineConfig::single(128), |_| {}).unwrap();
    let b = s.generate(&prompt, &params, &EngineConfig::single(128), |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert!(a.tokens.len() <= 12);
}

#[test]
fn stop_strings_are_not_emitted() {
    let s = tiny_session("stop");
    let prompt = s.tokenizer.encode("abc", true).unwrap();
    let free = s
        .generate(
            &prompt,
            &SamplingParams { max_tokens: 24, ..SamplingParams::greedy() },
            &EngineConfig::single(128),
            |_| {},
        )
        .unwrap();
    // Stop on a piece of what greedy decoding produces anyway.
    let Some(stop) = free.text.get(2..4).filter(|t| !t.trim().is_empty()) else { return };
    let params = SamplingParams { max_tokens: 24, stop: vec![stop.to_owned()], ..SamplingParams::greedy() };
    let mut streamed = String::new();
    let out = s.generate(&prompt, &params, &EngineConfig::single(128), |t| streamed.push_str(t)).unwrap();
    assert!(!out.text.contains(stop), "{:?} contains stop {stop:?}", out.text);
    assert_eq!(streamed, out.text);
}
