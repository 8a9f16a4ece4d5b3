//! Serving figures in Prometheus' text format (`GET /metrics`): queue depth,
//! running sequences, KV blocks, prefix-cache hit rate, token throughput,
//! time to first token and inter-token latency. Built on the
//! `prometheus-client` crate; the engine updates, the server renders.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
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
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn ttft_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn itl_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

fn load_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// Every figure the server exports, for every model it serves: each series
/// carries a `model` label (as vLLM's do), so one exposition holds several
/// models, and a model's figures survive it being unloaded and loaded again.
pub struct MetricsRegistry {
    registry: Registry,
    queue_depth: Family<Labels, Gauge>,
    running: Family<Labels, Gauge>,
    kv_blocks_used: Family<Labels, Gauge>,
    kv_blocks_free: Family<Labels, Gauge>,
    kv_blocks_total: Family<Labels, Gauge>,
    generation_tokens: Family<Labels, Counter>,
    computed_tokens: Family<Labels, Counter>,
    preemptions: Family<Labels, Counter>,
    ttft: HistogramFamily,
    itl: HistogramFamily,
    finished: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    prefix_queried: Family<Labels, Counter>,
    prefix_hits: Family<Labels, Counter>,
    prefix_hit_rate: Family<Labels, Gauge<f64, AtomicU64>>,
    tokens_per_second: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Loads of a model (first use and after an unload).
    pub model_loads: Family<Labels, Counter>,
    /// Unloads of a model, by reason (`budget`: room for another model; `keep_alive`: idle too long; `request`).
    pub model_unloads: Family<Labels, Counter>,
    /// Bytes a resident model holds (weights, scratch, KV pool); 0 when unloaded.
    pub model_resident_bytes: Family<Labels, Gauge>,
    /// 1 while a model is loading.
    pub model_loading: Family<Labels, Gauge>,
    /// Seconds a load took.
    pub model_load_seconds: HistogramFamily,
    /// Requests that waited for a model to load or for room to load it.
    pub model_waits: Family<Labels, Counter>,
    /// Requests of the router's model answered by each model, by reason.
    pub routes: Family<Labels, Counter>,
    /// The memory budget models are loaded under, bytes.
    pub memory_budget_bytes: Gauge,
    rates: Mutex<std::collections::HashMap<String, Rate>>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRegistry {
    /// A registry with no series yet.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let m = Self {
            queue_depth: Family::default(),
            running: Family::default(),
            kv_blocks_used: Family::default(),
            kv_blocks_free: Family::default(),
            kv_blocks_total: Family::default(),
            generation_tokens: Family::default(),
            computed_tokens: Family::default(),
            preemptions: Family::default(),
            ttft: Family::new_with_constructor(ttft_histogram),
            itl: Family::new_with_constructor(itl_histogram),
            finished: Family::default(),
            rejected: Family::default(),
            prefix_queried: Family::default(),
            prefix_hits: Family::default(),
            prefix_hit_rate: Family::default(),
            tokens_per_second: Family::default(),
            model_loads: Family::default(),
            model_unloads: Family::default(),
            model_resident_bytes: Family::default(),
            model_loading: Family::default(),
            model_load_seconds: Family::new_with_constructor(load_histogram),
            model_waits: Family::default(),
            routes: Family::default(),
            memory_budget_bytes: Gauge::default(),
            rates: Mutex::default(),
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
        registry.register("model_loads", "Model loads (first use, or after an unload)", m.model_loads.clone());
        registry.register("model_unloads", "Model unloads, by reason", m.model_unloads.clone());
        registry.register(
            "model_resident_bytes",
            "Memory a loaded model holds: weights, scratch and KV pool",
            m.model_resident_bytes.clone(),
        );
        registry.register("model_loading", "1 while the model loads", m.model_loading.clone());
        registry.register("model_load_seconds", "Time a model load took", m.model_load_seconds.clone());
        registry.register("model_waits", "Requests that waited for their model to load", m.model_waits.clone());
        registry.register("routes", "Routed requests, by the model that answered and why", m.routes.clone());
        registry.register("memory_budget_bytes", "Memory budget models are loaded under", m.memory_budget_bytes.clone());
        Self { registry, ..m }
    }

    /// The figures of model `name`, for its engine to update (the same
    /// series every time it is asked for: a reloaded model counts on).
    #[must_use]
    pub fn model(self: &Arc<Self>, name: &str) -> Arc<Metrics> {
        let labels: Labels = vec![("model", name.to_owned())];
        let generation_tokens = self.generation_tokens.get_or_create(&labels).clone();
        let tokens_per_second = self.tokens_per_second.get_or_create(&labels).clone();
        if let Ok(mut rates) = self.rates.lock() {
            rates.entry(name.to_owned()).or_insert_with(|| Rate {
                tokens: generation_tokens.clone(),
                gauge: tokens_per_second,
                samples: Mutex::default(),
            });
        }
        // The model's own series exist (at zero) from the start.
        drop(self.model_loads.get_or_create(&labels));
        drop(self.model_resident_bytes.get_or_create(&labels));
        Arc::new(Metrics {
            root: Arc::clone(self),
            model: name.to_owned(),
            queue_depth: self.queue_depth.get_or_create(&labels).clone(),
            running: self.running.get_or_create(&labels).clone(),
            kv_blocks_used: self.kv_blocks_used.get_or_create(&labels).clone(),
            kv_blocks_free: self.kv_blocks_free.get_or_create(&labels).clone(),
            kv_blocks_total: self.kv_blocks_total.get_or_create(&labels).clone(),
            generation_tokens,
            computed_tokens: self.computed_tokens.get_or_create(&labels).clone(),
            preemptions: self.preemptions.get_or_create(&labels).clone(),
            ttft: self.ttft.get_or_create(&labels).clone(),
            itl: self.itl.get_or_create(&labels).clone(),
            prefix_queried: self.prefix_queried.get_or_create(&labels).clone(),
            prefix_hits: self.prefix_hits.get_or_create(&labels).clone(),
            prefix_hit_rate: self.prefix_hit_rate.get_or_create(&labels).clone(),
        })
    }

    /// The text exposition of every metric (OpenMetrics).
    #[must_use]
    pub fn render(&self) -> String {
        if let Ok(rates) = self.rates.lock() {
            for r in rates.values() {
                r.update();
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The figures a dashboard shows for model `name`, read from the same
    /// counters as [`MetricsRegistry::render`] (its text, so the two always
    /// agree).
    #[must_use]
    pub fn snapshot(&self, name: &str) -> Snapshot {
        let text = self.render();
        let label = format!("model=\"{name}\"");
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&label)).collect();
        let value = |metric: &str| -> f64 {
            lines
                .iter()
                .filter(|l| l.split([' ', '{']).next() == Some(metric))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .fold(0.0, |a, b| a + b)
        };
        let quantiles = |metric: &str| -> [f64; 3] {
            let prefix = format!("{metric}_bucket{{");
            let buckets: Vec<(f64, f64)> = lines
                .iter()
                .filter_map(|l| {
                    let rest = l.strip_prefix(&prefix)?;
                    let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                    let count = rest.rsplit(' ').next()?;
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
}

/// The tokens-per-second gauge of one model, from its token counter.
struct Rate {
    tokens: Counter,
    gauge: Gauge<f64, AtomicU64>,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Rate {
    fn update(&self) {
        let now = Instant::now();
        let total = self.tokens.get();
        let Ok(mut samples) = self.samples.lock() else { return };
        samples.push_back((now, total));
        while samples.len() > 2 && samples.front().is_some_and(|(t, _)| now - *t > RATE_WINDOW) {
            samples.pop_front();
        }
        if let (Some(&(t0, n0)), Some(&(t1, n1))) = (samples.front(), samples.back()) {
            let secs = (t1 - t0).as_secs_f64();
            if secs > 0.0 {
                self.gauge.set((n1 - n0) as f64 / secs);
            }
        }
    }
}

/// The figures of one model, as its engine updates them.
pub struct Metrics {
    root: Arc<MetricsRegistry>,
    model: String,
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
    prefix_queried: Counter,
    prefix_hits: Counter,
    prefix_hit_rate: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// Figures of a model served alone, under the name `model`.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(MetricsRegistry::new()).model("model")
    }

    /// The registry these figures belong to (every model's).
    #[must_use]
    pub fn registry(&self) -> &Arc<MetricsRegistry> {
        &self.root
    }

    /// Counts a request that ended for `reason`.
    pub fn finished(&self, reason: &str) {
        self.root.finished.get_or_create(&vec![("model", self.model.clone()), ("reason", reason.to_owned())]).inc();
    }

    /// Counts a request refused for `reason`.
    pub fn rejected(&self, reason: &str) {
        self.root.rejected.get_or_create(&vec![("model", self.model.clone()), ("reason", reason.to_owned())]).inc();
    }

    /// Sets the prefix-cache counters to the manager's totals.
    pub fn set_prefix_stats(&self, queried: u64, hits: u64) {
        self.prefix_queried.inc_by(queried.saturating_sub(self.prefix_queried.get()));
        self.prefix_hits.inc_by(hits.saturating_sub(self.prefix_hits.get()));
        self.prefix_hit_rate.set(if queried == 0 { 0.0 } else { hits as f64 / queried as f64 });
    }

    /// The text exposition of every model's metrics.
    #[must_use]
    pub fn render(&self) -> String {
        self.root.render()
    }

    /// This model's dashboard figures.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.root.snapshot(&self.model)
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

    #[test]
    #[allow(clippy::float_cmp)] // counters read back as exact small integers
    fn models_have_series_of_their_own_in_one_exposition() {
        let root = std::sync::Arc::new(super::MetricsRegistry::new());
        let (a, b) = (root.model("small"), root.model("big"));
        a.generation_tokens.inc_by(5);
        b.generation_tokens.inc_by(7);
        b.rejected("queue_full");
        let text = root.render();
        assert_eq!(text.matches("# TYPE hearth_generation_tokens counter").count(), 1, "{text}");
        assert!(text.contains("hearth_generation_tokens_total{model=\"small\"} 5"), "{text}");
        assert_eq!((a.snapshot().generation_tokens, b.snapshot().generation_tokens), (5.0, 7.0));
        assert_eq!((a.snapshot().requests_rejected, b.snapshot().requests_rejected), (0.0, 1.0));
        // Asked again (a reload), the same series count on.
        root.model("small").generation_tokens.inc();
        assert_eq!(a.snapshot().generation_tokens, 6.0);
    }
}
