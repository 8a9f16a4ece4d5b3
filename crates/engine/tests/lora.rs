//! LoRA adapters on the real SmolLM2 base: two random adapters written by
//! `hearth_testutil::lora_adapter` (rank 8 and 16, on every attention and
//! feed-forward matrix) give llama.cpp's greedy tokens (recorded once with
//! `llama-server --lora`, `data/lora_greedy.json`), the bare base and both
//! adapters run in one batch with each sequence's tokens what it gets alone,
//! adapters never share KV blocks with the base or each other, and an
//! adapter for another base is refused.

use std::path::PathBuf;
use std::sync::mpsc;

use hearth_core::TokenId;
use hearth_engine::batching::{Engine, EngineConfig, Event, GenRequest};
use hearth_engine::metrics::Metrics;
use hearth_engine::LoadedModel;
use hearth_sampling::SamplingParams;
use hearth_testutil::{lora_adapter, real_model, LORA_TARGETS, TEST_ADAPTERS, TEST_ADAPTER_STRENGTH};
use serde_json::Value;

/// The test adapters, written once per test binary.
fn adapter_files() -> Vec<(&'static str, PathBuf)> {
    static FILES: std::sync::OnceLock<Vec<(&'static str, PathBuf)>> = std::sync::OnceLock::new();
    FILES
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("hearth-lora-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let base = real_model("smollm2");
            TEST_ADAPTERS
                .iter()
                .map(|&(name, seed, rank, alpha)| {
                    let path = dir.join(format!("{name}.gguf"));
                    std::fs::write(&path, lora_adapter(&base, seed, rank, alpha, TEST_ADAPTER_STRENGTH, &LORA_TARGETS))
                        .expect("adapter written");
                    (name, path)
                })
                .collect()
        })
        .clone()
}

fn smollm2_with_adapters() -> LoadedModel {
    let session = LoadedModel::load(&real_model("smollm2"), hearth_testutil::cpu_backend()).expect("smollm2 loads");
    for (name, path) in adapter_files() {
        session.load_adapter(name, &path).expect("adapter loads");
    }
    session
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("data/lora_greedy.json")).expect("fixture")
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams { max_tokens: n, ..SamplingParams::greedy() }
}

fn request(session: &LoadedModel, prompt: &[TokenId], adapter: Option<(&str, f32)>, n: usize) -> GenRequest {
    let adapter = adapter.map(|(name, scale)| (session.adapter(name).expect("adapter loaded"), scale));
    GenRequest { adapter, ignore_eos: true, ..GenRequest::new(prompt.to_vec(), greedy(n)) }
}

fn config() -> EngineConfig {
    EngineConfig { parallel: 8, max_waiting: 8, kv_blocks: 256, ..EngineConfig::single(512) }
}

/// Which adapter and scale each fixture case names.
fn case(name: &str) -> Option<(&str, f32)> {
    match name {
        "base" => None,
        other => Some(other.split_once('@').map_or((other, 1.0), |(a, s)| (a, s.parse().expect("scale")))),
    }
}

#[test]
fn each_adapter_gives_llama_cpp_greedy_tokens() {
    let session = smollm2_with_adapters();
    let fx = fixture();
    let n = fx["n_predict"].as_u64().expect("n") as usize;
    let prompts: Vec<Vec<TokenId>> = serde_json::from_value(fx["prompts"].clone()).expect("prompts");
    let mut worst = 0f32;
    for (name, expected) in fx["greedy"].as_object().expect("cases") {
        for (prompt, want) in prompts.iter().zip(expected.as_array().expect("per prompt")) {
            let want_tokens: Vec<TokenId> = serde_json::from_value(want["tokens"].clone()).expect("tokens");
            let mut engine = Engine::new(&session, config(), Metrics::new()).expect("engine");
            let (tx, rx) = mpsc::channel();
            let r = GenRequest { logprobs: Some(5), ..request(&session, prompt, case(name), n) };
            engine.submit(r, Box::new(move |e| tx.send(e).is_ok())).expect("submitted");
            while !engine.is_idle() {
                engine.step();
            }
            let steps: Vec<(TokenId, Vec<(TokenId, f32)>)> = rx
                .try_iter()
                .filter_map(|e| if let Event::Token { token, logprob: Some(lp), .. } = e { Some((token, lp.top)) } else { None })
                .collect();
            // llama-server stops at the end-of-generation token (and lists
            // it); this request ignores it to run the full length.
            let mut tokens: Vec<TokenId> = steps.iter().map(|(t, _)| *t).collect();
            if want_tokens.len() < n {
                let end = *want_tokens.last().expect("a token");
                assert!(session.tokenizer.is_end_of_generation(end), "{name}: llama.cpp stopped early on {end}");
                tokens.truncate(want_tokens.len());
            }
            assert_eq!(tokens, want_tokens, "{name} on {prompt:?}: {:?} vs llama.cpp {:?}", want_text(&session, &tokens), want["text"]);
            for (k, (_, top)) in steps.iter().take(want_tokens.len()).enumerate() {
                let theirs: Vec<(TokenId, f32)> = serde_json::from_value(want["top5"][k].clone()).expect("top5");
                for ((id, lp), (their_id, their_lp)) in top.iter().zip(&theirs).take(3) {
                    assert_eq!(id, their_id, "{name} step {k}: top tokens {top:?} vs {theirs:?}");
                    worst = worst.max((lp - their_lp).abs());
                }
            }
        }
    }
    eprintln!("worst top-3 log-probability difference from llama.cpp: {worst}");
    assert!(worst < 1e-3, "{worst}");
}

fn want_text(session: &LoadedModel, tokens: &[TokenId]) -> String {
    session.tokenizer.decode(tokens)
}

/// Runs `requests` in one engine, all submitted before the first step, and
/// returns each one's tokens and how many tokens the first step computed.
fn run_together(session: &LoadedModel, requests: Vec<GenRequest>) -> (Vec<Vec<TokenId>>, usize) {
    let mut engine = Engine::new(session, config(), Metrics::new()).expect("engine");
    let mut receivers = Vec::new();
    for r in requests {
        let (tx, rx) = mpsc::channel();
        let id = engine.submit(r, Box::new(move |e| tx.send(e).is_ok())).expect("submitted");
        receivers.push((id, rx));
    }
    let first_step = engine.step();
    while !engine.is_idle() {
        engine.step();
    }
    let tokens = receivers
        .into_iter()
        .map(|(_, rx)| rx.try_iter().filter_map(|e| if let Event::Token { token, .. } = e { Some(token) } else { None }).collect())
        .collect();
    (tokens, first_step)
}

#[test]
fn base_and_two_adapters_share_one_batch_and_each_gets_its_own_tokens() {
    let session = smollm2_with_adapters();
    let prompt: Vec<TokenId> = vec![504, 3575, 282, 4649, 314];
    let cases = [None, Some(("legal", 1.0)), Some(("style", 1.0)), Some(("legal", 0.5))];
    let alone: Vec<Vec<TokenId>> = cases
        .iter()
        .map(|&c| session.generate_request(request(&session, &prompt, c, 16), &config(), |_| {}).expect("alone").tokens)
        .collect();
    // Base, legal and style answer differently: each adapter changes the model.
    for (i, j) in [(0, 1), (0, 2), (1, 2), (1, 3)] {
        assert_ne!(alone[i], alone[j], "cases {i} and {j} gave the same tokens");
    }
    let together = cases.iter().map(|&c| request(&session, &prompt, c, 16)).collect();
    let (tokens, first_step) = run_together(&session, together);
    assert_eq!(first_step, cases.len() * prompt.len(), "the four prompts run in the first forward pass together");
    assert_eq!(tokens, alone, "a sequence's tokens do not depend on the adapters beside it");
}

#[test]
fn adapters_never_share_kv_blocks_with_the_base_or_each_other() {
    let session = smollm2_with_adapters();
    // 40 tokens: two full blocks of 16 the prefix cache could share.
    let prompt: Vec<TokenId> = (0..40).map(|i| 500 + i).collect();
    let mut engine = Engine::new(&session, config(), Metrics::new()).expect("engine");
    let mut cached = Vec::new();
    for adapter in [None, Some(("legal", 1.0)), Some(("legal", 1.0)), Some(("legal", 0.5)), Some(("style", 1.0)), None] {
        let (tx, rx) = mpsc::channel();
        engine.submit(request(&session, &prompt, adapter, 2), Box::new(move |e| tx.send(e).is_ok())).expect("submitted");
        while !engine.is_idle() {
            engine.step();
        }
        let usage = rx.try_iter().find_map(|e| if let Event::Done { usage, .. } = e { Some(usage) } else { None });
        cached.push(usage.expect("done").cached_tokens);
    }
    // Only a repeat of the same adapter at the same scale (and the base's repeat) hits.
    assert_eq!(cached, [0, 0, 32, 0, 0, 32]);
}

#[test]
fn an_adapter_for_another_base_is_refused_naming_the_mismatch() {
    let gemma = LoadedModel::load(&real_model("gemma3-270m"), hearth_testutil::cpu_backend()).expect("gemma loads");
    let (_, legal) = adapter_files().into_iter().next().expect("an adapter");
    let err = gemma.load_adapter("legal", &legal).expect_err("smollm2's adapter on gemma");
    assert!(err.to_string().contains("llama") && err.to_string().contains("gemma3"), "{err}");
    // Not an adapter at all.
    let err = gemma.load_adapter("x", &real_model("smollm2")).expect_err("a model is not an adapter");
    assert!(err.to_string().contains("general.type"), "{err}");
    assert!(gemma.load_adapter("a:b", &legal).is_err(), "names hold no ':'");
}
