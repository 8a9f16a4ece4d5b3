//! A bounded load generator for OpenAI-compatible servers (Hearth's own or
//! llama.cpp's `llama-server`, for side-by-side figures): N concurrent
//! clients stream chat completions; the report gives aggregate tokens/s,
//! time to first token and inter-token latency percentiles. Loopback only:
//! this is a measuring tool, not a way to flood someone else's machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests each client sends, one after another.
    pub requests_per_client: usize,
    /// Tokens each reply is asked for (`max_tokens`, with `ignore_eos`).
    pub max_tokens: usize,
    /// Words of filler in each prompt (prompts differ per request).
    pub prompt_words: usize,
    /// Shared system prompt (same for all requests), if any.
    pub system: Option<String>,
    /// Added to request numbers, so separate runs send different prompts.
    pub index_offset: usize,
    /// Give up on a request after this long.
    pub timeout: Duration,
}

/// One request's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RequestResult {
    /// HTTP status (0: connection failed).
    pub status: u16,
    /// Completion tokens (from usage, else counted chunks).
    pub tokens: usize,
    /// Seconds to the first content.
    pub ttft: Option<f64>,
    /// Mean seconds between tokens after the first.
    pub itl: Option<f64>,
    /// Finish reason.
    pub finish: Option<String>,
    /// Error text for failures.
    pub error: Option<String>,
}

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self { p50: at(0.5), p90: at(0.9), p99: at(0.99) }
    }
}

/// The figures of one load level.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests sent.
    pub requests: usize,
    /// Requests answered with 200 and a finish reason.
    pub ok: usize,
    /// Failures by HTTP status (0: no response).
    pub errors: BTreeMap<u16, usize>,
    /// Completion tokens received.
    pub tokens: usize,
    /// Seconds from first send to last reply.
    pub wall_secs: f64,
    /// `tokens / wall_secs`.
    pub aggregate_tokens_per_s: f64,
    /// Time to first token, seconds.
    pub ttft: Percentiles,
    /// Inter-token latency, seconds.
    pub itl: Percentiles,
    /// Every request.
    #[serde(skip)]
    pub results: Vec<RequestResult>,
}

/// Refuses anything but a loopback URL.
pub fn check_loopback(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let host = rest.split(['/', ':']).next().unwrap_or("");
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!("{url}: the load test only targets loopback addresses"))
    }
}

/// The prompt of request `i`: different filler words per request.
fn prompt_for(i: usize, words: usize) -> String {
    const WORDS: [&str; 16] = [
        "river", "stone", "lantern", "orchard", "harbor", "falcon", "meadow", "copper", "willow", "ember", "glacier",
        "thistle", "canyon", "saffron", "beacon", "marble",
    ];
    let filler: Vec<&str> = (0..words).map(|k| WORDS[(i * 7 + k * 3 + k / 5) % WORDS.len()]).collect();
    format!("Request {i}. Write a long story that uses these words: {}.", filler.join(" "))
}

/// A system prompt of `words` words (about 1.3 tokens each), the same every time.
#[must_use]
pub fn system_prompt(words: usize) -> String {
    let body: Vec<String> = (0..words).map(|k| format!("rule{}", k % 97)).collect();
    format!("You are a careful assistant. Follow these rules: {}.", body.join(" "))
}

/// Runs the load and reports.
pub async fn run(cfg: &LoadConfig) -> Result<LoadReport, String> {
    check_loopback(&cfg.url)?;
    let client = reqwest::Client::builder().timeout(cfg.timeout).build().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..cfg.clients)
        .map(|c| {
            let (client, cfg) = (client.clone(), cfg.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for r in 0..cfg.requests_per_client {
                    out.push(one_request(&client, &cfg, cfg.index_offset + c * cfg.requests_per_client + r).await);
                }
                out
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.map_err(|e| e.to_string())?);
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    let ok: Vec<&RequestResult> = results.iter().filter(|r| r.status == 200 && r.finish.is_some()).collect();
    let mut errors = BTreeMap::new();
    for r in results.iter().filter(|r| !(r.status == 200 && r.finish.is_some())) {
        *errors.entry(r.status).or_insert(0) += 1;
    }
    let tokens = ok.iter().map(|r| r.tokens).sum();
    Ok(LoadReport {
        clients: cfg.clients,
        requests: results.len(),
        ok: ok.len(),
        errors,
        tokens,
        wall_secs,
        aggregate_tokens_per_s: tokens as f64 / wall_secs,
        ttft: Percentiles::of(ok.iter().filter_map(|r| r.ttft).collect()),
        itl: Percentiles::of(ok.iter().filter_map(|r| r.itl).collect()),
        results,
    })
}

/// Body of request `i`.
#[must_use]
pub fn request_body(cfg: &LoadConfig, i: usize) -> Value {
    let mut messages = Vec::new();
    if let Some(s) = &cfg.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": prompt_for(i, cfg.prompt_words)}));
    json!({
        "messages": messages,
        "max_tokens": cfg.max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

async fn one_request(client: &reqwest::Client, cfg: &LoadConfig, i: usize) -> RequestResult {
    let mut res = RequestResult { status: 0, tokens: 0, ttft: None, itl: None, finish: None, error: None };
    let t0 = Instant::now();
    let url = format!("{}/v1/chat/completions", cfg.url.trim_end_matches('/'));
    let resp = match client.post(&url).json(&request_body(cfg, i)).send().await {
        Ok(r) => r,
        Err(e) => {
            res.error = Some(e.to_string());
            return res;
        }
    };
    res.status = resp.status().as_u16();
    if !resp.status().is_success() {
        res.error = Some(resp.text().await.unwrap_or_default());
        return res;
    }
    let (mut chunks, mut first, mut last) = (0usize, None::<Instant>, None::<Instant>);
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(piece) = body.next().await {
        let Ok(piece) = piece else {
            res.error = Some("stream broke".into());
            return res;
        };
        buf.push_str(&String::from_utf8_lossy(&piece));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data: ") else { continue };
                if data == "[DONE]" {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    res.tokens = n as usize;
                }
                if v.get("error").is_some() {
                    res.error = Some(v["error"].to_string());
                }
                let choice = &v["choices"][0];
                if choice["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()) {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = Some(now);
                    chunks += 1;
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    res.finish = Some(f.to_owned());
                }
            }
        }
    }
    if res.tokens == 0 {
        res.tokens = chunks;
    }
    res.ttft = first.map(|f| (f - t0).as_secs_f64());
    if let (Some(f), Some(l)) = (first, last) {
        if res.tokens > 1 {
            res.itl = Some((l - f).as_secs_f64() / (res.tokens - 1) as f64);
        }
    }
    res
}
