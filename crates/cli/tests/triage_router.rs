//! The triage router end to end, on the two real models: `hearth serve
//! --config` with SmolLM2 as the small model and Gemma 3 as the big one,
//! and `"model": "auto"` routed by each rule — tools, JSON, a long prompt,
//! keywords and the small model's own verdict — each reply saying which
//! model answered and why (its `model`, the `x-hearth-*` headers, streamed
//! too, and through Ollama's and Anthropic's APIs), with the same greedy
//! text as asking that model directly, counted in `hearth_routes_total`. A configuration with a mistake does not start.

#![allow(clippy::float_cmp)] // counters read back as exact small integers

mod common;

use std::process::Command;

use serde_json::{json, Value};

use common::{metric, start};

/// A routed request's reply and what its headers say.
struct Reply {
    status: u16,
    body: Value,
    routed_to: Option<String>,
    reason: Option<String>,
    margin: Option<f32>,
}

fn post(url: &str, path: &str, body: &Value) -> Reply {
    let req = ureq::post(&format!("{url}{path}")).set("Content-Type", "application/json");
    let r = match req.send_string(&body.to_string()) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let header = |name: &str| r.header(name).map(str::to_owned);
    let (routed_to, reason) = (header("x-hearth-routed-to"), header("x-hearth-route-reason"));
    let margin = header("x-hearth-classifier-margin").and_then(|m| m.parse().ok());
    let status = r.status();
    let text = r.into_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body, routed_to, reason, margin }
}

fn ask(url: &str, model: &str, content: &str, extra: &Value) -> Reply {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 6, "temperature": 0});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    post(url, "/v1/chat/completions", &body)
}

fn text_of(reply: &Value) -> &str {
    reply["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

const THRESHOLD: f32 = -3.5;

#[test]
fn auto_routes_by_each_rule_and_says_so() {
    let (small, big) = (hearth_testutil::real_model("smollm2"), hearth_testutil::real_model("gemma3-270m"));
    let dir = std::env::temp_dir().join(format!("hearth-router-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("hearth.toml");
    std::fs::write(
        &config,
        format!(
            r#"
memory = "2G"

[[model]]
name = "small"
model = "{}"
context = 512
parallel = 2
aliases = ["gpt-4o-mini"]

[[model]]
name = "big"
model = "{}"
context = 512
parallel = 2
keep_alive = "10m"

[router]
small = "small"
big = "big"
long_prompt_tokens = 200
hard_keywords = ["prove", "step by step"]
easy_keywords = ["translate"]
json = "small"
classifier_threshold = {THRESHOLD}
"#,
            small.display(),
            big.display()
        ),
    )
    .expect("config written");
    let server = start(&["--config".into(), config.display().to_string()]);
    let url = server.url.clone();

    // The router is listed beside its models.
    let models: Value = serde_json::from_str(&ureq::get(&format!("{url}/v1/models")).call().expect("models").into_string().expect("text"))
        .expect("json");
    let auto = models["data"].as_array().expect("data").iter().find(|m| m["id"] == "auto").expect("auto listed").clone();
    assert_eq!(auto["meta"]["router"], json!({"small": "small", "big": "big"}), "{models}");

    let none = json!({});
    let weather = json!({"tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]});
    let json_object = json!({"response_format": {"type": "json_object"}});
    let long = "Here is a note. ".repeat(60);
    let cases: [(&str, &Value, &str, &str); 5] = [
        ("Prove that 7 is prime.", &none, "big", "keyword \"prove\""),
        ("What is the weather in Paris?", &weather, "big", "tools offered"),
        ("Give me a color as JSON.", &json_object, "small", "JSON output asked for"),
        (&long, &none, "big", "long prompt"),
        ("Translate 'cat' into French.", &none, "small", "keyword \"translate\""),
    ];
    for (content, extra, target, why) in cases {
        let r = ask(&url, "auto", content, extra);
        assert_eq!(r.status, 200, "{content}: {}", r.body);
        assert_eq!(r.routed_to.as_deref(), Some(target), "{content}: {:?}", r.reason);
        assert_eq!(r.body["model"], target, "the reply names the model that answered");
        assert!(r.reason.as_deref().is_some_and(|w| w.starts_with(why)), "{content}: {:?}", r.reason);
        assert!(r.margin.is_none(), "no rule before the classifier asks it");
    }

    // No rule decides: the small model's margin against the threshold does,
    // and the text is what the chosen model says when asked directly.
    for content in ["Hello! How are you today?", "Compare B-trees and LSM-trees for a write-heavy database."] {
        let r = ask(&url, "auto", content, &none);
        assert_eq!(r.status, 200, "{}", r.body);
        let margin = r.margin.expect("the classifier's margin");
        let target = if margin >= THRESHOLD { "small" } else { "big" };
        assert_eq!(r.routed_to.as_deref(), Some(target), "{content}: {:?}", r.reason);
        assert!(r.reason.as_deref().is_some_and(|w| w.starts_with("classifier: ")), "{:?}", r.reason);
        let direct = ask(&url, target, content, &none);
        assert_eq!(text_of(&r.body), text_of(&direct.body), "{content}: routed and direct replies differ");
        assert!(direct.routed_to.is_none(), "a direct request is not routed");
    }

    // Streamed: the headers come first, every chunk names the answering model.
    let r = post(
        &url,
        "/v1/chat/completions",
        &json!({"model": "auto", "stream": true, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "Prove it."}]}),
    );
    assert_eq!((r.status, r.routed_to.as_deref()), (200, Some("big")));
    let sse = r.body.as_str().expect("an event stream");
    let chunks: Vec<Value> =
        sse.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).expect("chunk")).collect();
    assert!(!chunks.is_empty() && chunks.iter().all(|c| c["model"] == "big"), "{sse}");

    // Other protocols relay through the same path: Ollama's chat is routed too.
    let r = post(&url, "/api/chat", &json!({"model": "auto", "stream": false, "messages": [{"role": "user", "content": "Prove it."}], "options": {"num_predict": 4}}));
    assert_eq!((r.status, r.body["model"].as_str(), r.routed_to.as_deref()), (200, Some("big"), Some("big")), "{}", r.body);
    let r = post(&url, "/v1/messages", &json!({"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": "Prove it."}]}));
    assert_eq!((r.status, r.body["model"].as_str(), r.routed_to.as_deref()), (200, Some("big"), Some("big")), "{}", r.body);

    // Every routed request is counted, by model, target and reason.
    let routed = metric(&url, "hearth_routes_total", "auto");
    assert_eq!(routed, 10.0, "5 rules + 2 classified + 1 streamed + Ollama + Anthropic");
    let text = ureq::get(&format!("{url}/metrics")).call().expect("metrics").into_string().expect("text");
    assert!(text.contains(r#"hearth_routes_total{model="auto",target="big",reason="tools"} 1"#), "{text}");
    assert!(text.contains(r#"hearth_routes_total{model="auto",target="small",reason="json"} 1"#), "{text}");
    // A model's alias from the file answers under that alias.
    let r = ask(&url, "gpt-4o-mini", "Hi", &none);
    assert_eq!((r.status, r.body["model"].as_str()), (200, Some("gpt-4o-mini")));
    drop(server);

    // Mistakes in the file stop the start, named.
    for (text, says) in [
        ("[[model]]\nmodel = \"smollm2\"\ncontxt = 5\n", "contxt"),
        (&format!("[[model]]\nname = \"a\"\nmodel = \"{}\"\n[router]\nsmall = \"a\"\nbig = \"nope\"\n", small.display()), "\"nope\" is not served"),
    ] {
        std::fs::write(&config, text).expect("config written");
        let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["serve", "--port", "0", "--config", &config.display().to_string()])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{says}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
