//! Several models served under one memory budget: each loads on first use
//! and is unloaded, least recently used first, when another needs its room
//! (or when it has been idle past its `keep_alive`). A model with requests
//! in flight is never unloaded under them: a request holds a [`Lease`]
//! until it ends, and a request for a model that cannot fit yet waits for
//! leases to end, up to a limit, then is told to come back later.
//!
//! Which models to unload is a pure function ([`make_room`]), unit-tested
//! without models; loading and releasing run on tasks of their own, so a
//! client that leaves mid-load leaves no half-done state behind.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::batching::EngineConfig;
use crate::handle::EngineHandle;
use crate::metrics::{Metrics, MetricsRegistry};
use crate::plan::Footprint;
use crate::{EngineError, LoadedModel};
use hearth_models::lora::LoraAdapter;

/// Builds a model and the engine configuration it runs with (on a blocking
/// thread: loading takes seconds).
pub type Loader = Arc<dyn Fn() -> Result<(LoadedModel, EngineConfig), EngineError> + Send + Sync>;

/// A model the registry can serve.
pub struct ModelSpec {
    /// The name it is listed under.
    pub name: String,
    /// Other names it answers to.
    pub aliases: Vec<String>,
    /// Free-form tags listed with it.
    pub tags: Vec<String>,
    /// The file it loads from.
    pub path: PathBuf,
    /// Its architecture (`general.architecture`), known before it loads.
    pub arch: String,
    /// Positions one sequence may reach, known before it loads.
    pub n_ctx: usize,
    /// Bytes it is expected to hold once loaded (weights, scratch, KV
    /// pool); replaced by what it does hold after its first load.
    pub estimate: u64,
    /// Unload after this long without a request (`None`: only for room).
    pub keep_alive: Option<Duration>,
    /// How it will run once loaded, when known before (for capacity answers).
    pub planned: Option<EngineConfig>,
    /// Memory its load holds for a while beyond `estimate` (repacking
    /// buffers): room for it is made before the load starts.
    pub load_extra: u64,
    /// How to load it.
    pub load: Loader,
    /// LoRA adapters (name, file) loaded with it every time it loads:
    /// those given at start and those added while it runs.
    pub adapters: Arc<Mutex<Vec<(String, PathBuf)>>>,
}

impl ModelSpec {
    /// The spec of a model whose engine already runs, under `name`: it was
    /// loaded by its caller, so it is never loaded again (and never
    /// unloaded: no keep-alive, and a registry of one never needs room).
    #[must_use]
    pub fn running(name: String, engine: &EngineHandle) -> Self {
        let session = engine.session();
        let config = engine.config();
        let estimate = Footprint::of(session, config.kv_type, config.token_budget, config.parallel)
            .map_or(0, |f| f.with_kv((config.kv_blocks * config.block_size) as u64));
        Self {
            name,
            aliases: Vec::new(),
            tags: Vec::new(),
            path: session.path.clone(),
            arch: session.model.config().arch.clone(),
            n_ctx: engine.limits().max_seq_len(),
            estimate,
            keep_alive: None,
            planned: Some(config),
            load_extra: 0,
            load: Arc::new(|| Err(EngineError::Invalid("this model was loaded by its caller and cannot be loaded again".into()))),
            adapters: Arc::default(),
        }
    }
}

impl ModelSpec {
    /// Its LoRA adapters (name, file), in load order.
    #[must_use]
    pub fn adapter_list(&self) -> Vec<(String, PathBuf)> {
        // A poisoned lock only means a panic elsewhere mid-push: the list is still whole.
        self.adapters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl std::fmt::Debug for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSpec").field("name", &self.name).field("path", &self.path).finish_non_exhaustive()
    }
}

/// Why a model could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// More than the whole budget, even with every other model unloaded.
    #[error("model {name:?} needs {need} bytes, more than the whole memory budget of {budget} bytes")]
    TooBig { name: String, need: u64, budget: u64 },
    /// Models busy with requests hold the memory it needs; try again later.
    #[error("model {name:?} cannot be loaded now: the models in use hold the memory it needs; try again shortly")]
    Busy { name: String, retry_after: Duration },
    /// Its load failed.
    #[error("model {name:?} failed to load: {reason}")]
    Load { name: String, reason: String },
}

/// One model's place in the registry, as [`make_room`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupant {
    /// Bytes it holds (or will hold, while loading).
    pub bytes: u64,
    /// Requests in flight, a load or an unload under way: not to be unloaded now.
    pub busy: bool,
    /// When a request last ended on it (or it loaded).
    pub last_used: Instant,
}

/// What loading a model of `need` bytes takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Room {
    /// There is room now.
    Fits,
    /// Unload these (indices into the occupants) first.
    Unload(Vec<usize>),
    /// Only once busy models finish.
    Wait,
    /// Never: more than the whole budget.
    Never,
}

/// Which resident models to unload so that `need` more bytes fit in
/// `budget`: idle ones, least recently used first, as few as the LRU order
/// allows. Busy ones are never chosen.
#[must_use]
pub fn make_room(occupants: &[Occupant], budget: u64, need: u64) -> Room {
    if need > budget {
        return Room::Never;
    }
    let used: u64 = occupants.iter().map(|o| o.bytes).sum();
    if used + need <= budget {
        return Room::Fits;
    }
    let mut idle: Vec<usize> = (0..occupants.len()).filter(|&i| !occupants[i].busy).collect();
    idle.sort_by_key(|&i| occupants[i].last_used);
    let (mut freed, mut chosen) = (0, Vec::new());
    for i in idle {
        chosen.push(i);
        freed += occupants[i].bytes;
        if used - freed + need <= budget {
            return Room::Unload(chosen);
        }
    }
    Room::Wait
}

/// A loaded model's engine and what it costs.
struct Resident {
    engine: EngineHandle,
    bytes: u64,
}

#[derive(Default)]
struct Slot {
    /// Held beyond `bytes` while it loads.
    load_extra: u64,
    resident: Option<Resident>,
    loading: bool,
    /// Its memory is being released.
    unloading: bool,
    leases: usize,
    last_used: Option<Instant>,
    /// Bytes once loaded: the spec's estimate, then what it held.
    bytes: u64,
    /// Why its last load failed (for the requests that waited on it).
    load_error: Option<String>,
}

impl Slot {
    /// The memory it holds or is about to hold.
    fn held(&self) -> u64 {
        if self.loading {
            self.bytes + self.load_extra
        } else if self.resident.is_some() || self.unloading {
            self.bytes
        } else {
            0
        }
    }
}

/// What a model looks like now, for listings (`/v1/models`, `hearth ps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelState {
    /// `loaded`, `loading`, `unloading` or `unloaded`.
    pub state: &'static str,
    /// Bytes it holds (expected, when not loaded).
    pub bytes: u64,
    /// Requests in flight on it.
    pub requests: usize,
    /// KV pool tokens (loaded only).
    pub kv_tokens: Option<u64>,
    /// When its keep-alive runs out, if it is idle and has one.
    pub expires_in: Option<Duration>,
}

/// Several models under one budget.
pub struct Registry {
    specs: Vec<ModelSpec>,
    budget: u64,
    wait: Duration,
    slots: Mutex<Vec<Slot>>,
    changed: Notify,
    metrics: Arc<MetricsRegistry>,
    figures: Vec<Arc<Metrics>>,
}

/// A request's hold on a loaded model: the model stays loaded while any
/// lease on it lives.
pub struct Lease {
    registry: Arc<Registry>,
    index: usize,
    /// The model's engine.
    pub engine: EngineHandle,
}

impl Lease {
    /// The spec of the model held.
    #[must_use]
    pub fn spec(&self) -> &ModelSpec {
        &self.registry.specs[self.index]
    }

    /// Its index in the registry.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut slots = self.registry.lock();
            let slot = &mut slots[self.index];
            slot.leases = slot.leases.saturating_sub(1);
            slot.last_used = Some(Instant::now());
        }
        self.registry.changed.notify_waiters();
    }
}

impl Registry {
    /// A registry of `specs` under `budget` bytes; requests wait up to
    /// `wait` for room before they are refused.
    #[must_use]
    pub fn new(specs: Vec<ModelSpec>, budget: u64, wait: Duration, metrics: Arc<MetricsRegistry>) -> Arc<Self> {
        metrics.memory_budget_bytes.set(i64::try_from(budget).unwrap_or(i64::MAX));
        let figures = specs.iter().map(|s| metrics.model(&s.name)).collect();
        let slots = specs.iter().map(|s| Slot { bytes: s.estimate, load_extra: s.load_extra, ..Slot::default() }).collect();
        Arc::new(Self { specs, budget, wait, slots: Mutex::new(slots), changed: Notify::new(), metrics, figures })
    }

    /// A registry of one model whose engine already runs (`spec` from
    /// [`ModelSpec::running`]); its figures are the engine's.
    #[must_use]
    pub fn running(spec: ModelSpec, engine: EngineHandle) -> Arc<Self> {
        let metrics = Arc::clone(engine.metrics().registry());
        let bytes = spec.estimate;
        metrics.memory_budget_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        metrics.model_resident_bytes.get_or_create(&vec![("model", spec.name.clone())]).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let figures = vec![Arc::clone(engine.metrics())];
        let slot = Slot { resident: Some(Resident { engine, bytes }), bytes, last_used: Some(Instant::now()), ..Slot::default() };
        Arc::new(Self {
            specs: vec![spec],
            budget: bytes,
            wait: Duration::from_mins(1),
            slots: Mutex::new(vec![slot]),
            changed: Notify::new(),
            metrics,
            figures,
        })
    }

    /// The models it serves, in order (the first is the default).
    #[must_use]
    pub fn specs(&self) -> &[ModelSpec] {
        &self.specs
    }

    /// The memory budget, bytes.
    #[must_use]
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Every model's figures.
    #[must_use]
    pub fn metrics(&self) -> &Arc<MetricsRegistry> {
        &self.metrics
    }

    /// Model `index`'s figures (kept across its loads).
    #[must_use]
    pub fn figures(&self, index: usize) -> &Arc<Metrics> {
        &self.figures[index]
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A panic while holding the lock leaves plain counters behind, still usable.
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads the LoRA adapter at `path` as `name` into model `index`, which
    /// the caller holds loaded (a [`Lease`]), and keeps it for the model's
    /// later loads; its memory is counted against the budget.
    pub fn add_adapter(&self, index: usize, lease: &Lease, name: &str, path: &std::path::Path) -> Result<Arc<LoraAdapter>, EngineError> {
        let adapter = lease.engine.session().load_adapter(name, path)?;
        if let Ok(mut list) = self.specs[index].adapters.lock() {
            list.retain(|(n, _)| n != name);
            list.push((name.to_owned(), path.to_path_buf()));
        }
        self.lock()[index].bytes += adapter.bytes();
        Ok(adapter)
    }

    /// Model `index`'s engine if it is loaded now (no load, no lease).
    #[must_use]
    pub fn loaded(&self, index: usize) -> Option<EngineHandle> {
        self.lock().get(index)?.resident.as_ref().map(|r| r.engine.clone())
    }

    /// What each model looks like now.
    #[must_use]
    pub fn states(&self) -> Vec<ModelState> {
        let now = Instant::now();
        self.lock()
            .iter()
            .zip(&self.specs)
            .map(|(s, spec)| {
                let state = match (&s.resident, s.loading, s.unloading) {
                    (Some(_), _, _) => "loaded",
                    (None, true, _) => "loading",
                    (None, _, true) => "unloading",
                    _ => "unloaded",
                };
                let expires_in = match (&s.resident, spec.keep_alive, s.last_used) {
                    (Some(_), Some(k), Some(t)) if s.leases == 0 => Some(k.saturating_sub(now - t)),
                    _ => None,
                };
                let kv_tokens =
                    s.resident.as_ref().map(|r| (r.engine.config().kv_blocks * r.engine.config().block_size) as u64);
                ModelState { state, bytes: s.bytes, requests: s.leases, kv_tokens, expires_in }
            })
            .collect()
    }

    /// Bytes held by loaded (and loading) models.
    #[must_use]
    pub fn used(&self) -> u64 {
        self.lock().iter().map(Slot::held).sum()
    }

    /// Bytes that idle models hold (what unloading them would free).
    #[must_use]
    pub fn idle_bytes(&self) -> u64 {
        self.lock().iter().filter(|s| s.resident.is_some() && s.leases == 0 && !s.loading).map(|s| s.bytes).sum()
    }

    /// A lease on model `index`, loading it first if needed (unloading
    /// idle models for room). Waits for a load under way, or for busy
    /// models to free room, up to the registry's wait.
    pub async fn acquire(self: &Arc<Self>, index: usize) -> Result<Lease, RegistryError> {
        let started = Instant::now();
        let deadline = started + self.wait;
        let name = || self.specs[index].name.clone();
        let mut counted_wait = false;
        let mut saw_load = false;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the lock is released: no wake-up is missed.
            notified.as_mut().enable();
            {
                let mut slots = self.lock();
                let slot = &mut slots[index];
                if let Some(r) = &slot.resident {
                    slot.leases += 1;
                    let engine = r.engine.clone();
                    return Ok(Lease { registry: Arc::clone(self), index, engine });
                }
                if slot.loading {
                    saw_load = true;
                } else if saw_load && slot.load_error.is_some() {
                    let reason = slot.load_error.clone().unwrap_or_default();
                    return Err(RegistryError::Load { name: name(), reason });
                } else {
                    let need = slot.bytes + slot.load_extra;
                    let occupants: Vec<Occupant> = slots
                        .iter()
                        .map(|s| Occupant {
                            bytes: s.held(),
                            busy: s.leases > 0 || s.loading || s.unloading,
                            last_used: s.last_used.unwrap_or(started),
                        })
                        .collect();
                    match make_room(&occupants, self.budget, need) {
                        Room::Never => return Err(RegistryError::TooBig { name: name(), need, budget: self.budget }),
                        Room::Wait => {}
                        Room::Fits => {
                            self.start_load(&mut slots, index, Vec::new());
                            saw_load = true;
                        }
                        Room::Unload(victims) => {
                            self.start_load(&mut slots, index, victims);
                            saw_load = true;
                        }
                    }
                }
            }
            if !counted_wait {
                counted_wait = true;
                self.metrics.model_waits.get_or_create(&vec![("model", name())]).inc();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return Err(RegistryError::Busy { name: name(), retry_after: Duration::from_secs(5) });
            }
        }
    }

    /// Marks model `index` loading (and `victims` unloading) and starts a
    /// task that releases the victims, then loads it.
    fn start_load(self: &Arc<Self>, slots: &mut [Slot], index: usize, victims: Vec<usize>) {
        let released: Vec<(usize, EngineHandle)> = victims
            .into_iter()
            .filter_map(|v| {
                let s = &mut slots[v];
                let r = s.resident.take()?;
                s.unloading = true;
                Some((v, r.engine))
            })
            .collect();
        slots[index].loading = true;
        slots[index].load_error = None;
        self.metrics.model_loading.get_or_create(&vec![("model", self.specs[index].name.clone())]).set(1);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            for (v, engine) in released {
                me.release(v, engine, "budget").await;
            }
            me.load(index).await;
        });
    }

    /// Drops model `index`'s engine and waits until its memory is given
    /// back (the last holder of the model gone), then marks it unloaded.
    async fn release(&self, index: usize, engine: EngineHandle, reason: &str) {
        let name = self.specs[index].name.clone();
        let model: Weak<LoadedModel> = Arc::downgrade(engine.session());
        drop(engine);
        let t0 = Instant::now();
        while model.strong_count() > 0 {
            if t0.elapsed() > Duration::from_secs(30) {
                tracing::warn!("model {name:?}: still held 30 s after its unload; counting its memory as free");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hearth_cpu::return_freed_memory();
        {
            let mut slots = self.lock();
            slots[index].unloading = false;
        }
        let labels = vec![("model", name.clone())];
        self.metrics.model_resident_bytes.get_or_create(&labels).set(0);
        self.metrics.model_unloads.get_or_create(&vec![("model", name.clone()), ("reason", reason.to_owned())]).inc();
        tracing::info!("model {name:?} unloaded ({reason}) in {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
        self.changed.notify_waiters();
    }

    /// Loads model `index` (marked loading) on a blocking thread and
    /// starts its engine; wakes whoever waits, whatever happened.
    async fn load(&self, index: usize) {
        let spec = &self.specs[index];
        let labels = vec![("model", spec.name.clone())];
        tracing::info!("model {:?}: loading {}", spec.name, spec.path.display());
        let t0 = Instant::now();
        let loader = Arc::clone(&spec.load);
        let figures = Arc::clone(&self.figures[index]);
        let adapters = spec.adapter_list();
        let name = spec.name.clone();
        let result = tokio::task::spawn_blocking(move || {
            let (session, config) = loader()?;
            let footprint = Footprint::of(&session, config.kv_type, config.token_budget, config.parallel)?;
            let mut bytes = footprint.with_kv((config.kv_blocks * config.block_size) as u64);
            for (adapter, path) in &adapters {
                // An adapter that loaded before and fails now (its file
                // changed) costs the model nothing but that adapter.
                match session.load_adapter(adapter, path) {
                    Ok(a) => bytes += a.bytes(),
                    Err(e) => tracing::warn!("model {name:?}: adapter {adapter:?} not loaded: {e}"),
                }
            }
            let engine = EngineHandle::spawn_with(Arc::new(session), config, figures)?;
            Ok::<_, EngineError>(Resident { engine, bytes })
        })
        .await
        .map_err(|e| format!("the load panicked: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
        let secs = t0.elapsed().as_secs_f64();
        {
            let mut slots = self.lock();
            let slot = &mut slots[index];
            slot.loading = false;
            match result {
                Ok(resident) => {
                    if resident.bytes > slot.bytes {
                        tracing::warn!(
                            "model {:?} holds {} bytes, {} more than expected",
                            spec.name,
                            resident.bytes,
                            resident.bytes - slot.bytes
                        );
                    }
                    slot.bytes = resident.bytes;
                    slot.last_used = Some(Instant::now());
                    self.metrics.model_resident_bytes.get_or_create(&labels).set(i64::try_from(resident.bytes).unwrap_or(i64::MAX));
                    self.metrics.model_loads.get_or_create(&labels).inc();
                    self.metrics.model_load_seconds.get_or_create(&labels).observe(secs);
                    tracing::info!("model {:?} loaded in {secs:.2} s ({} bytes)", spec.name, resident.bytes);
                    slot.resident = Some(resident);
                }
                Err(reason) => {
                    tracing::error!("model {:?} failed to load: {reason}", spec.name);
                    slot.load_error = Some(reason);
                }
            }
        }
        self.metrics.model_loading.get_or_create(&labels).set(0);
        self.changed.notify_waiters();
    }

    /// Unloads models idle past their keep-alive; call now and then (the
    /// server does, every second).
    pub async fn expire_idle(self: &Arc<Self>) {
        let now = Instant::now();
        let expired: Vec<(usize, EngineHandle)> = {
            let mut slots = self.lock();
            slots
                .iter_mut()
                .zip(&self.specs)
                .enumerate()
                .filter_map(|(i, (s, spec))| {
                    let idle_since = s.last_used?;
                    let keep = spec.keep_alive?;
                    if s.leases > 0 || s.loading || now.duration_since(idle_since) < keep {
                        return None;
                    }
                    let r = s.resident.take()?;
                    s.unloading = true;
                    Some((i, r.engine))
                })
                .collect()
        };
        for (i, engine) in expired {
            self.release(i, engine, "keep_alive").await;
        }
    }

    /// Unloads model `index` now if it is idle (Ollama's `keep_alive: 0`);
    /// whether it was.
    pub async fn unload(self: &Arc<Self>, index: usize) -> bool {
        let engine = {
            let mut slots = self.lock();
            let s = &mut slots[index];
            if s.leases > 0 || s.loading {
                return false;
            }
            let Some(r) = s.resident.take() else { return false };
            s.unloading = true;
            r.engine
        };
        self.release(index, engine, "request").await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn room_comes_from_idle_models_least_recently_used_first() {
        let t0 = Instant::now();
        let o = |bytes, busy, used| Occupant { bytes, busy, last_used: at(t0, used) };
        // Nothing loaded: anything within the budget fits.
        assert_eq!(make_room(&[o(0, false, 0)], 100, 100), Room::Fits);
        assert_eq!(make_room(&[], 100, 101), Room::Never);
        // 60 + 30 used of 100; 20 more needs one unloaded: the older idle one.
        let two = [o(60, false, 5), o(30, false, 1)];
        assert_eq!(make_room(&two, 100, 20), Room::Unload(vec![1]));
        // 50 more: the older one frees only 30, so both go, oldest first.
        assert_eq!(make_room(&two, 100, 50), Room::Unload(vec![1, 0]));
        // A busy model is never chosen: wait for it.
        let busy = [o(60, true, 0), o(30, false, 9)];
        assert_eq!(make_room(&busy, 100, 20), Room::Unload(vec![1]));
        assert_eq!(make_room(&busy, 100, 50), Room::Wait);
        // Already fits beside the others.
        assert_eq!(make_room(&[o(40, true, 0), o(0, false, 0)], 100, 60), Room::Fits);
    }
}
