//! Hostile and careless clients against the real SmolLM2 server: none of
//! them may hurt another user. Bad sampling values while others stream, a
//! huge conversation to truncate while `/health` is polled, silent and
//! half-sent connections, multi-megabyte bodies, forged control tokens, and
//! every error in OpenAI's shape.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{chat_body, config, start, start_with, Server, SERIAL};
use hearth_server::HttpLimits;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sampling_values_get_a_400_naming_the_field_and_the_others_finish() {
    let _serial = SERIAL.lock().await;
    let server = start(config(8, 8192, 64, 2048), None).await;
    let system = "You are a helpful assistant who answers in full sentences about the natural world.";
    let user_body = |q: &str| {
        json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
               "temperature": 0.7, "seed": 5, "max_tokens": 48, "ignore_eos": true, "stream": true})
    };
    // Warm the prefix cache with the shared system prompt.
    let (_, finish, _) = common::stream_chat(&server, &user_body("Why is grass green?")).await;
    assert_eq!(finish.as_deref(), Some("length"));
    let hits_before = server.metric("hearth_prefix_cache_hit_tokens_total").await;

    let users: Vec<_> = ["Why do birds sing?", "How do rivers form?", "What makes thunder?"]
        .iter()
        .map(|q| {
            let (server, body) =
                (Server { url: server.url.clone(), addr: server.addr, http: server.http.clone() }, user_body(q));
            tokio::spawn(async move { common::stream_chat(&server, &body).await })
        })
        .collect();
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let bad = [
        (json!({"messages": msgs, "min_p": 2}), "min_p"),
        (json!({"messages": msgs, "repeat_penalty": -1}), "repeat_penalty"),
        (json!({"messages": msgs, "repeat_penalty": 0}), "repeat_penalty"),
        (json!({"messages": msgs, "repeat_penalty": 1e38}), "repeat_penalty"),
        (json!({"messages": msgs, "top_k": 1_000_000_000_000_i64}), "top_k"),
        (json!({"messages": msgs, "top_k": -1}), "top_k"),
        (json!({"messages": msgs, "frequency_penalty": 5}), "frequency_penalty"),
        (json!({"messages": msgs, "temperature": -1}), "temperature"),
        (json!({"messages": msgs, "top_p": 0}), "top_p"),
        (json!({"messages": msgs, "logit_bias": {"49152": 5}}), "logit_bias"),
        (json!({"messages": msgs, "logit_bias": {"abc": 5}}), "logit_bias"),
        (json!({"messages": [{"role": "hacker", "content": "hi"}]}), "messages[0].role"),
        (json!({"messages": [{"role": "", "content": "hi"}]}), "messages[0].role"),
        (json!({"messages": msgs, "response_format": {"type": "xml"}}), "response_format.type"),
        (json!({"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "strin"}}}}), "response_format"),
        (json!({"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}), "response_format.json_schema.schema"),
        (json!({"messages": msgs, "response_format": {"type": "json_object"}, "stop": ["}"]}), "stop"),
        (json!({"messages": msgs, "grammar": "start: ("}), "grammar"),
        (json!({"messages": msgs, "regex": "[a-"}), "regex"),
        (json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}}]}), "tools"),
        (json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "no spaces"}}]}), "tools[0].name"),
        (json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}), "tool_choice"),
        (json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]}), "messages[1].tool_call_id"),
    ];
    for (body, field) in &bad {
        for path in ["/v1/chat/completions", "/v1/completions"] {
            let mut body = body.clone();
            if path == "/v1/completions" {
                if field.starts_with("messages") {
                    continue; // a fault in the messages has no text-endpoint twin
                }
                body.as_object_mut().unwrap().remove("messages");
                body["prompt"] = json!("Once upon a time");
            }
            let (status, v) = server.post(path, &body).await;
            assert_eq!(status, 400, "{path} {body}: {v}");
            // Tools are refused by name on the text endpoint before their contents are read.
            let field = if path == "/v1/completions" && field.starts_with("tool") { "tools" } else { *field };
            assert_eq!(v["error"]["param"].as_str(), Some(field), "{path} {body}: {v}");
            assert_eq!(v["error"]["type"].as_str(), Some("invalid_request_error"), "{v}");
        }
    }
    for u in users {
        let (text, finish, error) = u.await.expect("user task");
        assert!(!error, "a user's stream carried an error chunk");
        assert_eq!(finish.as_deref(), Some("length"), "a user's stream did not finish normally: {text:?}");
    }
    let hits_after = server.metric("hearth_prefix_cache_hit_tokens_total").await;
    assert!(hits_after >= hits_before + 3.0 * 16.0, "the prefix cache kept its hits: {hits_before} -> {hits_after}");
    // A valid logit bias works and is honoured.
    let period = session_token(".");
    let body = json!({"messages": msgs, "temperature": 0, "max_tokens": 3, "logit_bias": {period.to_string(): 100}});
    let (status, v) = server.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("..."), "{v}");
    server.assert_drained().await;
}

fn session_token(text: &str) -> u32 {
    common::session().tokenizer.token_id(text).expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_a_thousand_turns_does_not_stall_health() {
    let _serial = SERIAL.lock().await;
    let server = start(config(4, 4096, 16, 2048), None).await;
    let mut history = vec![json!({"role": "system", "content": "Be brief."})];
    for i in 0..1000 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        history.push(json!({"role": role, "content": format!("turn {i}: {}", "some words of history ".repeat(12))}));
    }
    history.push(json!({"role": "user", "content": "Name a color."}));
    let body = json!({"messages": history, "max_tokens": 4, "temperature": 0, "context_overflow": "truncate"});
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (http, url, done) = (server.http.clone(), server.url.clone(), done.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = http.get(format!("{url}/health")).send().await.expect("health");
                assert_eq!(r.status().as_u16(), 200);
                worst = worst.max(t0.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst
        })
    };
    let t0 = Instant::now();
    let (status, v) = server.post("/v1/chat/completions", &body).await;
    let took = t0.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = poller.await.expect("poller");
    assert_eq!(status, 200, "{v}");
    let prompt = v["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(prompt < 2048 && prompt > 1500, "truncated to fit, keeping as much as fits: {prompt} tokens");
    eprintln!("truncate 1,002 messages: {took:.2?}, worst /health wait {worst:.3?}, prompt {prompt} tokens");
    assert!(worst < Duration::from_secs(1), "health waited {worst:?}");
}

/// Resident memory of this process now (bytes).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples [`rss`] every few milliseconds until dropped; the highest seen.
struct RssPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssPeak {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        Self { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_prompts_are_refused_before_tokenizing() {
    let _serial = SERIAL.lock().await;
    let server = start(config(4, 4096, 16, 4096), None).await;
    let (status, _) = server.post("/v1/chat/completions", &chat_body("warm up", 2, false)).await;
    assert_eq!(status, 200);
    let before = rss();
    let sampler = RssPeak::start();
    let huge = "All work and no play makes a dull model. ".repeat(7 << 20 >> 6);
    let bodies = [
        json!({"messages": [{"role": "user", "content": huge}], "max_tokens": 4}),
        json!({"messages": [{"role": "user", "content": huge}], "max_tokens": 4, "context_overflow": "truncate"}),
        json!({"prompt": huge, "max_tokens": 4}),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let path = if i == 2 { "/v1/completions" } else { "/v1/chat/completions" };
        let t0 = Instant::now();
        let (status, v) = server.post(path, body).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("context_length_exceeded")), "{v}");
        assert!(t0.elapsed() < Duration::from_secs(5), "refused in {:?}", t0.elapsed());
    }
    let grew = sampler.finish().saturating_sub(before);
    eprintln!("three rejected 7 MB bodies: peak RSS grew by {} MB", grew >> 20);
    assert!(grew < 300 << 20, "peak RSS grew by {} MB", grew >> 20);
    // Over the body cap: 413 in OpenAI's shape, answered from the headers
    // before the body is read.
    let addr = server.addr;
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9437184\r\n\r\n";
        s.write_all(head.as_bytes()).expect("write");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    })
    .await
    .expect("client");
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"request_too_large\""), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_openai_shape_and_gauges_are_true_from_the_start() {
    let _serial = SERIAL.lock().await;
    let server = start(config(2, 1024, 4, 512), None).await;
    let free = server.metric("hearth_kv_blocks_free").await;
    assert!((free - 64.0).abs() < 0.5, "free blocks before any request: {free}");
    let r = server.http.get(format!("{}/v1/chat/completions", server.url)).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 405);
    let v: Value = r.json().await.expect("405 body is JSON");
    assert_eq!(v["error"]["code"].as_str(), Some("method_not_allowed"), "{v}");
    let r = server.http.get(format!("{}/v1/nothing", server.url)).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.expect("404 body is JSON");
    assert_eq!(v["error"]["type"].as_str(), Some("invalid_request_error"), "{v}");
    let (status, v) = server.post("/v1/chat/completions", &json!({"messages": []})).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("messages")), "{v}");
}

/// A raw TCP client: returns how long until the server closed the socket.
fn time_to_close(addr: std::net::SocketAddr, send: &[u8], limit: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(send).expect("write");
    s.set_read_timeout(Some(limit)).expect("timeout");
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(t0.elapsed()),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_and_health_stays_up() {
    let _serial = SERIAL.lock().await;
    // A short header deadline keeps the test quick; `hearth serve` uses 30 s.
    let limits = HttpLimits {
        max_connections: 32,
        header_timeout: Duration::from_secs(3),
        body_timeout: Duration::from_secs(3),
        ..HttpLimits::default()
    };
    let server = start_with(config(2, 1024, 4, 512), None, limits).await;
    let addr = server.addr;
    let payloads: [&[u8]; 4] = [
        b"",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mess",
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", // then idle on keep-alive
    ];
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let payload = payloads[i % payloads.len()];
            tokio::task::spawn_blocking(move || time_to_close(addr, payload, Duration::from_secs(45)))
        })
        .collect();
    // Meanwhile /health answers at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let t0 = Instant::now();
        let r = server.http.get(format!("{}/health", server.url)).send().await.expect("health");
        assert_eq!(r.status().as_u16(), 200);
        assert!(t0.elapsed() < Duration::from_secs(1), "health took {:?}", t0.elapsed());
    }
    let mut worst = Duration::ZERO;
    for c in clients {
        let closed = c.await.expect("client").expect("the server closed the connection within 45 s");
        worst = worst.max(closed);
    }
    eprintln!("20 silent / half-sent / idle connections: all closed, the last after {worst:.2?}");
    assert!(worst < Duration::from_secs(10), "closed after {worst:?} with a 3 s deadline");
    // Past the connection cap, a newcomer waits in the backlog until the
    // header deadline frees a slot: late, never refused.
    let hold: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let t0 = Instant::now();
    let fresh = reqwest::Client::new();
    let r = fresh.get(format!("{}/health", server.url)).send().await.expect("health past the cap");
    assert_eq!(r.status().as_u16(), 200);
    let waited = t0.elapsed();
    eprintln!("health past a full connection cap answered after {waited:.2?}");
    assert!(waited < Duration::from_secs(6), "waited {waited:?} with a 3 s deadline");
    drop(hold);
}
