//! Constrained decoding on the real models: every schema of the suite in
//! `data/schemas.json`, sampled at temperature 1.0 (where a small model left
//! alone would stray most), must give output that parses and validates, and
//! must end by itself (not at `max_tokens`): every schema has a longest output
//! (strings, arrays and numbers bounded; recursion Hearth bounds itself). All requests run through one
//! batched engine, constrained and free sequences mixed, as a server sees them.

use std::collections::HashMap;
use std::sync::mpsc;

use hearth_engine::batching::{Engine, EngineConfig, Event, GenRequest};
use hearth_engine::metrics::Metrics;
use hearth_engine::{Constraint, FinishReason, LoadedModel};
use hearth_sampling::SamplingParams;
use hearth_text::Message;

fn session(alias: &str) -> LoadedModel {
    let path = hearth_testutil::real_model(alias);
    LoadedModel::load(&path, hearth_testutil::cpu_backend()).unwrap_or_else(|e| panic!("loading {alias}: {e}"))
}

fn suite() -> Vec<(String, serde_json::Value)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/schemas.json");
    let all: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path).expect("suite")).expect("JSON");
    all.into_iter().map(|e| (e["name"].as_str().expect("name").to_owned(), e["schema"].clone())).collect()
}

struct Reply {
    text: String,
    finish: Option<FinishReason>,
    error: Option<String>,
}

/// Runs `requests` through one engine of `parallel` slots; replies in order.
fn run_all(s: &LoadedModel, requests: Vec<GenRequest>, parallel: usize) -> Vec<Reply> {
    let config = EngineConfig { parallel, max_waiting: requests.len(), kv_blocks: parallel * 1024 / 16, n_ctx: 1024, ..EngineConfig::single(1024) };
    let mut engine = Engine::new(s, config, Metrics::new()).expect("engine");
    let (tx, rx) = mpsc::channel();
    let mut index = HashMap::new();
    for (i, r) in requests.into_iter().enumerate() {
        let tx = tx.clone();
        let id = engine.submit(r, Box::new(move |e| tx.send((i, e)).is_ok())).expect("submit");
        index.insert(id, i);
    }
    let mut replies: Vec<Reply> = (0..index.len()).map(|_| Reply { text: String::new(), finish: None, error: None }).collect();
    while !engine.is_idle() {
        engine.step();
    }
    drop(tx);
    for (i, e) in rx.try_iter() {
        match e {
            Event::Token { text, .. } => replies[i].text.push_str(&text),
            Event::Done { text, finish, .. } => {
                replies[i].text.push_str(&text);
                replies[i].finish = Some(finish);
            }
            Event::Error(why) => replies[i].error = Some(why),
        }
    }
    replies
}

fn prompt_for(s: &LoadedModel, name: &str, schema: &serde_json::Value) -> Vec<u32> {
    let ask = format!("Reply with JSON for \"{name}\" following this schema: {schema}");
    s.chat_prompt(&[Message::new("user", &ask)]).expect("prompt")
}

fn check_suite(alias: &str) {
    let s = session(alias);
    let suite = suite();
    assert!(suite.len() >= 50, "the suite has {} schemas", suite.len());
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for (name, schema) in &suite {
        let guide = s.guide(&Constraint::JsonSchema(schema.clone())).unwrap_or_else(|e| panic!("{name}: {e}"));
        for seed in 0..3 {
            let params = SamplingParams { max_tokens: 600, seed, ..SamplingParams::openai_defaults() };
            let mut r = GenRequest::new(prompt_for(&s, name, schema), params);
            r.guide = Some(guide.clone());
            requests.push(r);
            expected.push(Some((name, schema)));
        }
        // A free request in the same batch: constraints are per sequence.
        if expected.len() % 10 == 0 {
            let free = SamplingParams { max_tokens: 16, seed: 7, ..SamplingParams::openai_defaults() };
            requests.push(GenRequest::new(prompt_for(&s, name, schema), free));
            expected.push(None);
        }
    }
    let t0 = std::time::Instant::now();
    let replies = run_all(&s, requests, 16);
    let mut failures = Vec::new();
    let mut tokens = 0;
    for (reply, want) in replies.iter().zip(&expected) {
        let Some((name, schema)) = want else { continue };
        tokens += reply.text.len();
        if let Some(e) = &reply.error {
            failures.push(format!("{name}: error {e}"));
            continue;
        }
        if reply.finish != Some(FinishReason::Stop) {
            failures.push(format!("{name}: ended by {:?}: {}", reply.finish, reply.text));
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(&reply.text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: does not parse ({e}): {}", reply.text));
                continue;
            }
        };
        let validator = jsonschema::validator_for(schema).expect("the suite's schemas are valid");
        if let Err(e) = validator.validate(&value) {
            failures.push(format!("{name}: does not validate ({e}): {}", reply.text));
        }
    }
    eprintln!("{alias}: {} constrained replies ({tokens} bytes) in {:.1}s", expected.iter().flatten().count(), t0.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{alias}: {} of {} failed:\n{}", failures.len(), replies.len(), failures.join("\n"));
}

#[test]
fn every_schema_of_the_suite_parses_and_validates_on_smollm2() {
    check_suite("smollm2");
}

#[test]
fn every_schema_of_the_suite_parses_and_validates_on_gemma3() {
    check_suite("gemma3-270m");
}

/// Decode speed with and without constraints, batch of one and a mixed batch
/// of four (two constrained, two free), median of 3 runs. Figures, not
/// assertions (speed is measured, not asserted): run with
/// `cargo test --release -p hearth-engine --test constrained -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; prints JSON lines"]
fn constrained_decode_speed() {
    // A long forced output: 160 numbers, one to three tokens each.
    let schema = serde_json::json!({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9999}, "minItems": 160, "maxItems": 160});
    for alias in ["smollm2", "gemma3-270m"] {
        let s = session(alias);
        let guide = s.guide(&Constraint::JsonSchema(schema.clone())).expect("schema");
        let prompt = s.chat_prompt(&[Message::new("user", "List numbers.")]).expect("prompt");
        for (label, batch, constrained) in [("free", 1, 0), ("schema", 1, 1), ("free", 4, 0), ("mixed", 4, 2)] {
            let mut rates = Vec::new();
            for _ in 0..3 {
                let requests: Vec<GenRequest> = (0..batch)
                    .map(|i| {
                        let params = SamplingParams { max_tokens: 128, seed: i as u64, ..SamplingParams::openai_defaults() };
                        let mut r = GenRequest::new(prompt.clone(), params);
                        r.ignore_eos = true;
                        if i < constrained {
                            r.guide = Some(guide.clone());
                        }
                        r
                    })
                    .collect();
                let t0 = std::time::Instant::now();
                let replies = run_all(&s, requests, batch);
                let secs = t0.elapsed().as_secs_f64();
                assert!(replies.iter().all(|r| r.error.is_none() && r.finish == Some(FinishReason::Length)));
                rates.push((batch * 128) as f64 / secs);
            }
            rates.sort_by(f64::total_cmp);
            println!(r#"{{"model": "{alias}", "batch": {batch}, "kind": "{label}", "tokens_per_s": {:.1}}}"#, rates[1]);
        }
    }
}

/// Whether an output is in a grammar's language.
type Valid = Box<dyn Fn(&str) -> bool>;

/// llama.cpp's GBNF grammars, translated to Lark, hold on the real model at
/// temperature 1.0: each output is in the grammar's language and ends by itself.
#[test]
fn gbnf_grammars_hold_on_the_real_model() {
    let s = session("smollm2");
    let digits = |t: &str| (1..=3).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
    let cases: Vec<(&str, Valid)> = vec![
        ("root ::= \"a\"{5,5}", Box::new(|t| t == "aaaaa")),
        (
            "root ::= \"[\" item (\",\" item){0,4} \"]\"\nitem ::= [0-9]{1,3}",
            Box::new(move |t| {
                let inner = t.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
                inner.is_some_and(|i| i.split(',').count() <= 5 && i.split(',').all(digits))
            }),
        ),
        ("# an answer\nroot ::= yes-no \".\"\nyes-no ::= \"yes\" | \"no\"", Box::new(|t| t == "yes." || t == "no.")),
        (
            "root ::= \"\\\"\" [^\"\\n]{1,20} \"\\\"\"",
            Box::new(|t| {
                let inner = t.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or("\"");
                (1..=20).contains(&inner.chars().count()) && !inner.contains(['"', '\n'])
            }),
        ),
        ("root ::= \"x\" . \"y\"", Box::new(|t| t.starts_with('x') && t.ends_with('y') && t.chars().count() == 3)),
    ];
    let mut requests = Vec::new();
    for (src, _) in &cases {
        let constraint = Constraint::grammar_text(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let guide = s.guide(&constraint).unwrap_or_else(|e| panic!("{src}: {e}"));
        for seed in 0..3 {
            let params = SamplingParams { max_tokens: 100, seed, ..SamplingParams::openai_defaults() };
            let mut r = GenRequest::new(s.chat_prompt(&[Message::new("user", "Answer.")]).expect("prompt"), params);
            r.guide = Some(guide.clone());
            requests.push(r);
        }
    }
    let replies = run_all(&s, requests, 8);
    for (k, r) in replies.iter().enumerate() {
        let (src, valid) = &cases[k / 3];
        assert!(r.error.is_none() && r.finish == Some(FinishReason::Stop), "{src}: {:?} {:?}", r.error, r.finish);
        assert!(valid(&r.text), "{src}: {:?}", r.text);
    }
}
