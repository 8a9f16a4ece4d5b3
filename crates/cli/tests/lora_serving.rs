//! LoRA adapters served: `hearth serve -m smollm2 --lora legal=… --lora
//! style=…` answers the bare base and both adapters at once — each request
//! picks its adapter by model name (`smollm2:legal`) or by the `lora`
//! field — in one batch (the engine's step log lists all three), each with
//! the tokens it gets alone and with llama.cpp's greedy text for the same
//! adapter (`engine/tests/data/lora_greedy.json`). Adapters are listed in
//! `/v1/models` and `/v1/adapters`, one more loads while the server runs
//! (from `--lora-dir` only), and an adapter for another base stops the start.

mod common;

use std::process::Command;

use serde_json::{json, Value};

fn post(url: &str, path: &str, body: &Value) -> (u16, Value) {
    let req = ureq::post(&format!("{url}{path}")).set("Content-Type", "application/json");
    let r = match req.send_string(&body.to_string()) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let status = r.status();
    (status, serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null))
}

fn complete(url: &str, model: &str, prompt: &Value, lora: Option<Value>, n: usize) -> (u16, Value) {
    let mut body = json!({"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0});
    if let Some(l) = lora {
        body["lora"] = l;
    }
    post(url, "/v1/completions", &body)
}

fn text(reply: &Value) -> String {
    reply["choices"][0]["text"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn adapters_are_chosen_per_request_and_run_together() {
    let base = hearth_testutil::real_model("smollm2");
    let dir = std::env::temp_dir().join(format!("hearth-lora-serve-{}", std::process::id()));
    let lora_dir = dir.join("adapters");
    std::fs::create_dir_all(&lora_dir).expect("dirs");
    let mut files = Vec::new();
    for &(name, seed, rank, alpha) in &hearth_testutil::TEST_ADAPTERS {
        let path = dir.join(format!("{name}.gguf"));
        let bytes = hearth_testutil::lora_adapter(&base, seed, rank, alpha, hearth_testutil::TEST_ADAPTER_STRENGTH, &hearth_testutil::LORA_TARGETS);
        std::fs::write(&path, &bytes).expect("adapter written");
        files.push((name, path));
    }
    // The same legal adapter, in the run-time folder under another name.
    std::fs::copy(&files[0].1, lora_dir.join("legal-copy.gguf")).expect("copied");

    let mut args: Vec<String> = vec!["-m".into(), format!("smollm2={}", base.display()), "-np".into(), "4".into(), "-c".into(), "512".into()];
    for (name, path) in &files {
        args.extend(["--lora".into(), format!("{name}={}", path.display())]);
    }
    args.extend(["--lora-dir".into(), lora_dir.display().to_string()]);
    let server = common::start_with_env(&args, &[("HEARTH_LOG", "hearth_engine::batching=debug")]);
    let url = server.url.clone();

    // llama.cpp's greedy text with each adapter, through the server.
    let fx: Value = serde_json::from_str(include_str!("../../engine/tests/data/lora_greedy.json")).expect("fixture");
    let prompt = &fx["prompts"][0];
    for (case, model, lora) in [("base", "smollm2", None), ("legal", "smollm2:legal", None), ("style", "smollm2", Some(json!("style")))] {
        let want = fx["greedy"][case][0]["text"].as_str().expect("text");
        let (status, reply) = complete(&url, model, prompt, lora, 32);
        assert_eq!(status, 200, "{case}: {reply}");
        assert_eq!(text(&reply), want, "{case}: the server's greedy text is llama.cpp's");
        assert_eq!(reply["model"], model, "the reply names the model and adapter asked for");
    }

    // Alone, then all three at once: the same tokens, in one batch.
    let cases: [(&str, Option<Value>); 4] = [
        ("smollm2", None),
        ("smollm2:legal", None),
        ("smollm2", Some(json!({"name": "style", "scale": 1.0}))),
        ("smollm2", Some(json!([{"id": 0, "scale": 0.5}, {"id": 1, "scale": 0}]))),
    ];
    let words = json!("Once upon a time, in a small village,");
    let alone: Vec<String> = cases.iter().map(|(m, l)| text(&complete(&url, m, &words, l.clone(), 16).1)).collect();
    assert_ne!(alone[0], alone[1]);
    assert_ne!(alone[1], alone[2]);
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> =
            cases.iter().map(|(m, l)| s.spawn(|| text(&complete(&url, m, &words, l.clone(), 16).1))).collect();
        handles.into_iter().map(|h| h.join().expect("request")).collect()
    });
    assert_eq!(together, alone, "a request's tokens do not depend on the adapters beside it");
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("step:") && l.contains(":base") && l.contains(":legal×1") && l.contains(":style×1")),
        "no step ran the base and both adapters together:\n{log}"
    );

    // Listed: as models, and with their sizes.
    let models: Value = serde_json::from_str(&ureq::get(&format!("{url}/v1/models")).call().expect("models").into_string().expect("text")).expect("json");
    let ids: Vec<&str> = models["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"smollm2:legal") && ids.contains(&"smollm2:style"), "{ids:?}");
    let listed: Value = serde_json::from_str(&ureq::get(&format!("{url}/v1/adapters")).call().expect("adapters").into_string().expect("text")).expect("json");
    assert_eq!(listed["data"][0]["name"], "legal");
    assert_eq!(listed["data"][0]["matrices"], 30 * 7, "{listed}");

    // Loaded while running, from the adapter folder only.
    let (status, loaded) = post(&url, "/v1/adapters", &json!({"name": "legal2", "file": "legal-copy.gguf"}));
    assert_eq!(status, 201, "{loaded}");
    assert_eq!(text(&complete(&url, "smollm2:legal2", &words, None, 16).1), alone[1], "the same file gives the same tokens");
    for file in ["../legal.gguf", "/etc/passwd", ".hidden"] {
        let (status, err) = post(&url, "/v1/adapters", &json!({"name": "x", "file": file}));
        assert_eq!(status, 400, "{file}: {err}");
    }
    let (status, err) = post(&url, "/v1/adapters", &json!({"name": "x", "file": "missing.gguf"}));
    assert_eq!(status, 400, "{err}");
    // Unknown adapters are 404s naming those loaded.
    let (status, err) = complete(&url, "smollm2:nope", &words, None, 4);
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("adapter_not_found")), "{err}");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains("legal, style")), "{err}");
    let (status, err) = complete(&url, "smollm2", &words, Some(json!([{"id": 0, "scale": 1}, {"id": 1, "scale": 1}])), 4);
    assert_eq!(status, 400, "two adapters at once: {err}");
    drop(server);

    // An adapter for another base stops the start, naming it.
    let gemma = hearth_testutil::real_model("gemma3-270m");
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["serve", "--port", "0", "-m", &gemma.display().to_string(), "--lora", &format!("legal={}", files[0].1.display())])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("legal") && stderr.contains("gemma3"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
