//! Two real models served under a memory budget that holds only one at a
//! time: `hearth serve -m smollm2=… -m gemma=… --memory 600M`. Alternating
//! requests all succeed with the same greedy text as before each swap, the
//! swaps are counted in `/metrics`, two models asked for at once both
//! answer (the second waits for the first to finish: a model is never
//! unloaded under a request), and the process's anonymous memory (what the
//! models own; mapped file pages are the page cache's) never passes the
//! budget, sampled every few milliseconds throughout.

#![allow(clippy::float_cmp)] // counters read back as exact small integers

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{metric, start};

use serde_json::{json, Value};

const BUDGET_MIB: u64 = 600;

fn chat(url: &str, model: &str) -> (u16, Value) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 12, "temperature": 0});
    let json_of = |r: ureq::Response| serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null);
    let req = ureq::post(&format!("{url}/v1/chat/completions")).set("Content-Type", "application/json");
    match req.send_string(&body.to_string()) {
        Ok(r) => (r.status(), json_of(r)),
        Err(ureq::Error::Status(code, r)) => (code, json_of(r)),
        Err(e) => panic!("{model}: {e}"),
    }
}

/// `RssAnon` of process `pid`, bytes.
fn anonymous_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

#[test]
fn two_models_take_turns_under_a_budget_that_holds_one() {
    let smollm2 = hearth_testutil::real_model("smollm2");
    let gemma = hearth_testutil::real_model("gemma3-270m");
    let server = start(&[
        "-m".into(),
        format!("smollm2={}", smollm2.display()),
        "-m".into(),
        format!("gemma={}", gemma.display()),
        "--memory".into(),
        format!("{BUDGET_MIB}M"),
        "-c".into(),
        "512".into(),
        "-np".into(),
        "2".into(),
    ]);
    let url = server.url.clone();

    // The peak of the models' own memory, sampled while everything runs.
    let (peak, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let sampler = {
        let (peak, done, pid) = (Arc::clone(&peak), Arc::clone(&done), server.child.id());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(b) = anonymous_bytes(pid) {
                    peak.fetch_max(b, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // Only the default model is loaded at start; both are listed.
    let models: Value =
        serde_json::from_str(&ureq::get(&format!("{url}/v1/models")).call().expect("models").into_string().expect("text"))
            .expect("json");
    let states: Vec<(&str, &str)> =
        models["data"].as_array().expect("data").iter().map(|m| (m["id"].as_str().unwrap(), m["status"]["value"].as_str().unwrap())).collect();
    assert_eq!(states, [("smollm2", "loaded"), ("gemma", "unloaded")], "{models}");

    // Six alternating requests: each succeeds, says which model answered,
    // and gives the same greedy text each time its model comes back.
    let mut first: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for model in ["gemma", "smollm2", "gemma", "smollm2", "gemma", "smollm2"] {
        let (status, reply) = chat(&url, model);
        assert_eq!(status, 200, "{model}: {reply}");
        assert_eq!(reply["model"], model, "{reply}");
        let text = reply["choices"][0]["message"]["content"].as_str().expect("text").to_owned();
        assert!(!text.is_empty(), "{model}: {reply}");
        assert_eq!(first.entry(model).or_insert_with(|| text.clone()), &text, "{model} changed its greedy reply after a swap");
    }
    // Swaps are counted: gemma loaded 3 times, smollm2 1 + 3, each unloaded for room.
    assert_eq!(metric(&url, "hearth_model_loads_total", "gemma"), 3.0);
    assert_eq!(metric(&url, "hearth_model_loads_total", "smollm2"), 4.0);
    assert_eq!(metric(&url, "hearth_model_unloads_total", "gemma") + metric(&url, "hearth_model_unloads_total", "smollm2"), 6.0);

    // Both at once: one runs, the other waits for its lease to end, then swaps in.
    let (a, b) = (url.clone(), url.clone());
    let one = std::thread::spawn(move || chat(&a, "gemma"));
    let two = std::thread::spawn(move || chat(&b, "smollm2"));
    for (name, h) in [("gemma", one), ("smollm2", two)] {
        let (status, reply) = h.join().expect("request thread");
        assert_eq!(status, 200, "{name} at once: {reply}");
        assert_eq!(reply["choices"][0]["message"]["content"].as_str(), first.get(name).map(String::as_str), "{reply}");
    }

    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("peak anonymous memory {:.1} MiB under a {BUDGET_MIB} MiB budget", peak as f64 / 1048576.0);
    assert!(peak <= BUDGET_MIB << 20, "peak anonymous memory {peak} bytes is over the {BUDGET_MIB} MiB budget");

    // Ollama's chat reaches the model it names (the same greedy text as OpenAI's chat).
    let r = ureq::post(&format!("{url}/api/chat"))
        .send_string(
            &json!({"model": "gemma", "stream": false, "messages": [{"role": "user", "content": "Name a color."}],
                    "options": {"num_predict": 12, "temperature": 0}})
            .to_string(),
        )
        .expect("ollama chat");
    let reply: Value = serde_json::from_str(&r.into_string().expect("text")).expect("json");
    assert_eq!(reply["message"]["content"].as_str(), first.get("gemma").map(String::as_str), "{reply}");

    // A name nobody serves is answered by the default model (its name in the reply).
    let (status, reply) = chat(&url, "gpt-4o");
    assert_eq!((status, reply["model"].as_str()), (200, Some("smollm2")), "{reply}");

    // Ollama's way: `keep_alive: 0` with an empty prompt unloads a model, an empty prompt loads it.
    let generate = |body: Value| -> Value {
        let r = ureq::post(&format!("{url}/api/generate")).send_string(&body.to_string()).expect("generate");
        serde_json::from_str(&r.into_string().expect("text")).expect("json")
    };
    let state = |name: &str| -> String {
        let models: Value =
            serde_json::from_str(&ureq::get(&format!("{url}/v1/models")).call().expect("models").into_string().expect("text"))
                .expect("json");
        models["data"].as_array().expect("data").iter().find(|m| m["id"] == name).expect("listed")["status"]["value"]
            .as_str()
            .expect("state")
            .to_owned()
    };
    assert_eq!(generate(json!({"model": "smollm2", "prompt": "", "keep_alive": 0}))["done_reason"], "unload");
    assert_eq!(state("smollm2"), "unloaded");
    let text = ureq::get(&format!("{url}/metrics")).call().expect("metrics").into_string().expect("text");
    assert!(text.contains("hearth_model_unloads_total{model=\"smollm2\",reason=\"request\"} 1"), "{text}");
    assert_eq!(generate(json!({"model": "smollm2", "prompt": ""}))["done_reason"], "load");
    assert_eq!(state("smollm2"), "loaded");
}
