//! Serving figures in Prometheus' text format (`GET /metrics`): queue depth,
//! running sequences, KV blocks, prefix-cache hit rate, token throughput,
//! time to first token and inter-token latency. Built on the
//! `prometheus-client` crate; the engine updates, the server renders.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Window over which `hearth_generation_tokens_per_second` is averaged.
const RATE_WINDOW: Duration = Duration::from_secs(5);

type Labels = Vec<(&'static str, String)>;

/// Every figure the server exports.
pub struct Metrics {
    registry: Registry,
    /// Requests waiting for a slot.
    pub queue_depth: Gauge,
    /// Sequences in the running batch.
    pub running: Gauge,
    /// KV blocks owned by sequences.
    pub kv_blocks_used: Gauge,
    /// KV blocks free (including evictable cached ones).
    pub kv_blocks_free: Gauge,
    /// KV blocks in the pool.
    pub kv_blocks_total: Gauge,
    /// Tokens sampled.
    pub generation_tokens: Counter,
    /// Tokens run through the model (prompts, recomputation, decodes).
    pub computed_tokens: Counter,
    /// Sequences preempted for lack of KV blocks.
    pub preemptions: Counter,
    /// Seconds from request arrival to its first token.
    pub ttft: Histogram,
    /// Seconds between consecutive tokens of a request.
    pub itl: Histogram,
    finished: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    prefix_queried: Counter,
    prefix_hits: Counter,
    prefix_hit_rate: Gauge<f64, AtomicU64>,
    tokens_per_second: Gauge<f64, AtomicU64>,
    rate_samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let m = Self {
            queue_depth: Gauge::default(),
            running: Gauge::default(),
            kv_blocks_used: Gauge::default(),
            kv_blocks_free: Gauge::default(),
            kv_blocks_total: Gauge::default(),
            generation_tokens: Counter::default(),
            computed_tokens: Counter::default(),
            preemptions: Counter::default(),
            ttft: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            itl: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            finished: Family::default(),
            rejected: Family::default(),
            prefix_queried: Counter::default(),
            prefix_hits: Counter::default(),
            prefix_hit_rate: Gauge::default(),
            tokens_per_second: Gauge::default(),
            rate_samples: Mutex::new(VecDeque::new()),
            registry: Registry::default(),
        };
        registry.register("queue_depth", "Requests waiting for a slot", m.queue_depth.clone());
        registry.register("running_sequences", "Sequences in the running batch", m.running.clone());
        registry.register("kv_blocks_used", "KV cache blocks owned by sequences", m.kv_blocks_used.clone());
        registry.register("kv_blocks_free", "KV cache blocks free or evictable", m.kv_blocks_free.clone());
        registry.register("kv_blocks_total", "KV cache blocks in the pool", m.kv_blocks_total.clone());
        registry.register("generation_tokens", "Tokens sampled", m.generation_tokens.clone());
        registry.register("computed_tokens", "Tokens run through the model", m.computed_tokens.clone());
        registry.register("preemptions", "Sequences preempted for lack of KV blocks", m.preemptions.clone());
        registry.register("time_to_first_token_seconds", "Request arrival to first token", m.ttft.clone());
        registry.register("inter_token_latency_seconds", "Time between tokens of a request", m.itl.clone());
        registry.register("requests_finished", "Requests ended, by reason", m.finished.clone());
        registry.register("requests_rejected", "Requests refused, by reason", m.rejected.clone());
        registry.register(
            "prefix_cache_queried_tokens",
            "Prompt tokens looked up in the prefix cache",
            m.prefix_queried.clone(),
        );
        registry.register("prefix_cache_hit_tokens", "Prompt tokens found in the prefix cache", m.prefix_hits.clone());
        registry.register(
            "prefix_cache_hit_rate",
            "Hit tokens / queried tokens since start",
            m.prefix_hit_rate.clone(),
        );
        registry.register(
            "generation_tokens_per_second",
            "Tokens sampled per second over the last 5 s",
            m.tokens_per_second.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts a request that ended for `reason`.
    pub fn finished(&self, reason: &str) {
        self.finished.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    /// Counts a request refused for `reason`.
    pub fn rejected(&self, reason: &str) {
        self.rejected.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    /// Sets the prefix-cache counters to the manager's totals.
    pub fn set_prefix_stats(&self, queried: u64, hits: u64) {
        self.prefix_queried.inc_by(queried.saturating_sub(self.prefix_queried.get()));
        self.prefix_hits.inc_by(hits.saturating_sub(self.prefix_hits.get()));
        self.prefix_hit_rate.set(if queried == 0 { 0.0 } else { hits as f64 / queried as f64 });
    }

    /// The text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        self.update_rate();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn update_rate(&self) {
        let now = Instant::now();
        let total = self.generation_tokens.get();
        let Ok(mut samples) = self.rate_samples.lock() else { return };
        samples.push_back((now, total));
        while samples.len() > 2 && samples.front().is_some_and(|(t, _)| now - *t > RATE_WINDOW) {
            samples.pop_front();
        }
        if let (Some(&(t0, n0)), Some(&(t1, n1))) = (samples.front(), samples.back()) {
            let secs = (t1 - t0).as_secs_f64();
            if secs > 0.0 {
                self.tokens_per_second.set((n1 - n0) as f64 / secs);
            }
        }
    }
}
