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

    /// The figures a dashboard shows, read from the same counters as
    /// [`Metrics::render`] (its text, so the two always agree).
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let text = self.render();
        let value = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.split([' ', '{']).next() == Some(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .fold(0.0, |a, b| a + b)
        };
        let quantiles = |name: &str| -> [f64; 3] {
            let prefix = format!("{name}_bucket{{le=\"");
            let buckets: Vec<(f64, f64)> = text
                .lines()
                .filter_map(|l| {
                    let rest = l.strip_prefix(&prefix)?;
                    let (le, count) = rest.split_once("\"} ")?;
                    Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, count.parse().ok()?))
                })
                .collect();
            let total = buckets.last().map_or(0.0, |b| b.1);
            [0.5, 0.9, 0.99].map(|q| {
                if total == 0.0 {
                    return 0.0;
                }
                let upper = buckets.iter().find(|b| b.1 >= q * total).map_or(f64::INFINITY, |b| b.0);
                // The open last bucket reads as the largest finite bound.
                if upper.is_finite() { upper } else { buckets.iter().rev().find(|b| b.0.is_finite()).map_or(0.0, |b| b.0) }
            })
        };
        Snapshot {
            waiting: value("hearth_queue_depth"),
            running: value("hearth_running_sequences"),
            kv_blocks_used: value("hearth_kv_blocks_used"),
            kv_blocks_free: value("hearth_kv_blocks_free"),
            kv_blocks_total: value("hearth_kv_blocks_total"),
            generation_tokens: value("hearth_generation_tokens_total"),
            tokens_per_second: value("hearth_generation_tokens_per_second"),
            prefix_cache_hit_rate: value("hearth_prefix_cache_hit_rate"),
            preemptions: value("hearth_preemptions_total"),
            requests_finished: value("hearth_requests_finished_total"),
            requests_rejected: value("hearth_requests_rejected_total"),
            ttft_seconds: quantiles("hearth_time_to_first_token_seconds"),
            itl_seconds: quantiles("hearth_inter_token_latency_seconds"),
        }
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

/// A dashboard's view of the serving figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// Requests waiting for a slot.
    pub waiting: f64,
    /// Sequences in the running batch.
    pub running: f64,
    /// KV blocks owned by sequences.
    pub kv_blocks_used: f64,
    /// KV blocks free or evictable.
    pub kv_blocks_free: f64,
    /// KV blocks in the pool.
    pub kv_blocks_total: f64,
    /// Tokens sampled since start.
    pub generation_tokens: f64,
    /// Tokens sampled per second, last 5 s.
    pub tokens_per_second: f64,
    /// Prefix-cache hit tokens / queried tokens since start.
    pub prefix_cache_hit_rate: f64,
    /// Sequences preempted since start.
    pub preemptions: f64,
    /// Requests ended since start.
    pub requests_finished: f64,
    /// Requests refused since start (429s and the like).
    pub requests_rejected: f64,
    /// Time to first token: p50, p90, p99 (bucket upper bounds), seconds.
    pub ttft_seconds: [f64; 3],
    /// Inter-token latency: p50, p90, p99, seconds.
    pub itl_seconds: [f64; 3],
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn the_snapshot_reads_what_the_exposition_says() {
        let m = Metrics::new();
        m.running.set(3);
        m.queue_depth.set(2);
        m.kv_blocks_total.set(100);
        m.generation_tokens.inc_by(42);
        m.rejected("queue_full");
        m.rejected("queue_full");
        m.finished("stop");
        for t in [0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.2, 3.0] {
            m.ttft.observe(t);
        }
        let s = m.snapshot();
        assert_eq!((s.running, s.waiting, s.kv_blocks_total, s.generation_tokens), (3.0, 2.0, 100.0, 42.0));
        assert_eq!((s.requests_rejected, s.requests_finished), (2.0, 1.0));
        assert!((s.ttft_seconds[0] - 0.005).abs() < 1e-12, "{:?}", s.ttft_seconds);
        assert!(s.ttft_seconds[1] >= 0.2 && s.ttft_seconds[1] < 0.5, "{:?}", s.ttft_seconds);
        assert!(s.ttft_seconds[2] >= 3.0, "{:?}", s.ttft_seconds);
        assert!(Metrics::new().snapshot().itl_seconds.iter().all(|&q| q == 0.0));
    }
}
