//! The CPU backend: scalar reference kernels (the specification), SIMD fast
//! paths selected once at run time, weights repacked for them at load, and
//! the worker pool that spreads work over cores.
//!
//! Invariant: every fast kernel has a scalar twin (`kernels::reference`,
//! `packed::reference`) and is tested against it.

mod dispatch;
pub mod kernels;
pub mod kv;
mod matmul;
pub mod ops;
pub mod packed;
pub mod peak;
pub mod pool;
mod tiled_attention;

use hearth_core::encoder_reference as backend_reference;
use hearth_core::{
    Activation, AttentionShape, AttentionSpan, Backend, BackendError, KvDataMut, KvLayer, MatmulJob, PreparedWeight,
    RopeParams, TokenId, WeightView,
};

pub use dispatch::{kernels as selected_kernels, reference_kernels, KernelChoice, Kernels};
pub use matmul::{get_rows, matmul, matmul_many, CpuWeight, TernaryLayout};
pub use pool::ThreadPool;

/// How a [`CpuBackend`] runs: every knob comes from its caller (the CLI
/// reads flags and environment; the library reads neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuOptions {
    /// Worker threads, the caller included (`None`: all cores).
    pub threads: Option<usize>,
    /// Which kernels run.
    pub kernels: KernelChoice,
    /// How ternary weights are laid out.
    pub ternary: TernaryLayout,
}

/// The CPU implementation of [`Backend`]: its own worker pool and how it
/// lays out ternary weights; the kernel set its options chose is the
/// process's (`dispatch`). Models that
/// share one backend share its threads.
#[derive(Clone)]
pub struct CpuBackend {
    pool: std::sync::Arc<ThreadPool>,
    ternary: TernaryLayout,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("isa", &dispatch::kernels().isa)
            .field("threads", &self.pool.threads())
            .field("ternary", &self.ternary)
            .finish()
    }
}

impl CpuBackend {
    /// A backend configured by `opts`. The kernel set is chosen once per
    /// process (it is the machine's); a second backend asking for another
    /// set is refused.
    pub fn new(opts: CpuOptions) -> Result<Self, BackendError> {
        dispatch::choose(opts.kernels).map_err(|standing| {
            BackendError::Config(format!("kernels {standing:?} are already in use in this process"))
        })?;
        let threads =
            opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
        if threads == 0 {
            return Err(BackendError::Config("threads must be at least 1".into()));
        }
        Ok(Self { pool: std::sync::Arc::new(ThreadPool::new(threads)), ternary: opts.ternary })
    }

    /// Worker threads, the caller included.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The worker pool (for callers that spread their own work the same way).
    #[must_use]
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }
}

impl PreparedWeight for CpuWeight {
    fn rows(&self) -> usize {
        CpuWeight::rows(self)
    }

    fn cols(&self) -> usize {
        CpuWeight::cols(self)
    }

    fn bytes(&self) -> usize {
        CpuWeight::bytes(self)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!("cpu ({}, {} threads)", dispatch::kernels().isa, self.pool.threads())
    }

    fn supports(&self, ty: hearth_core::GgmlType) -> bool {
        kernels::reference::is_supported(ty)
    }

    fn prepare(&self, w: &WeightView<'_>) -> Result<Box<dyn PreparedWeight>, BackendError> {
        let mut prepared = CpuWeight::new(&self.pool, w.ty, w.data, w.rows, w.cols, self.ternary)
            .map_err(|e| BackendError::UnsupportedType(e.0))?;
        if let CpuWeight::Float { any_order, .. } = &mut prepared {
            *any_order = w.any_order;
        }
        if w.expert {
            match &mut prepared {
                CpuWeight::Packed(p) => p.row_by_row = true,
                CpuWeight::Float { row_by_row, .. } => *row_by_row = true,
                CpuWeight::Ternary(_) | CpuWeight::TernaryLut(_) => {}
            }
        }
        Ok(Box::new(prepared))
    }

    fn matmul(&self, w: &dyn PreparedWeight, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), BackendError> {
        let w = w.as_any().downcast_ref::<CpuWeight>().ok_or(BackendError::ForeignWeight)?;
        matmul::matmul(&self.pool, w, x, n, out);
        Ok(())
    }

    fn matmul_many(&self, jobs: &mut [MatmulJob<'_>]) -> Result<(), BackendError> {
        let mut cpu_jobs = Vec::with_capacity(jobs.len());
        for j in jobs.iter_mut() {
            let w = j.w.as_any().downcast_ref::<CpuWeight>().ok_or(BackendError::ForeignWeight)?;
            cpu_jobs.push((w, j.x, j.n, &mut *j.out));
        }
        matmul::matmul_many(&self.pool, &mut cpu_jobs);
        Ok(())
    }

    fn get_rows(&self, w: &WeightView<'_>, ids: &[TokenId], out: &mut [f32]) -> Result<(), BackendError> {
        matmul::get_rows(w.ty, w.data, w.cols, ids, out).map_err(|e| BackendError::UnsupportedType(e.0))
    }

    fn softmax_rows(&self, x: &mut [f32], dim: usize) {
        ops::softmax_rows(x, dim);
    }

    fn rms_norm(&self, x: &mut [f32], dim: usize, weight: &[f32], eps: f32) {
        ops::rms_norm(&self.pool, x, dim, weight, eps);
    }

    fn rope(&self, x: &mut [f32], head_dim: usize, positions: &[usize], params: &RopeParams) {
        ops::rope(x, head_dim, positions, params);
    }

    fn gated_activation(&self, gate: &mut [f32], up: &[f32], act: Activation) {
        ops::gated_activation(&self.pool, gate, up, act);
    }

    fn gelu_erf(&self, x: &mut [f32]) {
        // The reference's own arithmetic, spread over the workers.
        self.pool.for_each_chunk_mut(x, 4096, &|_, c| c.iter_mut().for_each(|v| *v = backend_reference::gelu_erf(*v)));
    }

    fn layer_norm(&self, x: &mut [f32], dim: usize, weight: &[f32], bias: &[f32], eps: f32) {
        let rows = (4096 / dim.max(1)).max(1) * dim;
        self.pool.for_each_chunk_mut(x, rows, &|_, c| backend_reference::layer_norm(c, dim, weight, bias, eps));
    }

    fn attention(
        &self,
        q: &[f32],
        shape: &AttentionShape,
        kv: &KvLayer<'_>,
        spans: &[AttentionSpan<'_>],
        sinks: Option<&[f32]>,
        out: &mut [f32],
    ) {
        ops::attention(&self.pool, q, shape, kv, spans, sinks, out);
    }

    fn rotate_heads(&self, x: &mut [f32], head_dim: usize) {
        x.chunks_exact_mut(head_dim).for_each(ops::hadamard);
    }

    fn write_kv(&self, pool: &mut KvDataMut<'_>, dim: usize, rows: &[usize], x: &[f32]) {
        kv::write_rows(pool, dim, rows, x);
    }
}

/// Gives memory freed by an unloaded model back to the OS. glibc keeps
/// freed heap memory for reuse (and, after large blocks are freed, serves
/// later large ones from the heap too), so without this a process that
/// unloads a model stays as large as it was.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a size only and touches no Rust-visible memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every allocation of 1 MiB or more its own mapping, given back to
/// the OS when freed. glibc otherwise raises that threshold each time such
/// a block is freed, so after one model is unloaded the next one's weights
/// come from the heap, and what it frees later stays with the process: a
/// server that swaps models would grow by about a model per swap (measured:
/// 150 MB more after one Gemma 3 → SmolLM2 swap). For processes that free
/// models; set once, before loading.
pub fn return_large_blocks_on_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and touches no Rust-visible memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Locks every page mapped now (the loaded weights) into RAM so the OS never
/// pages them out (`--memory-priority high`). Later allocations (the KV pool)
/// are not locked, so they stay lazily backed.
pub fn lock_resident_memory() -> std::io::Result<()> {
    // SAFETY: mlockall takes flags only and touches no Rust-visible memory.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
