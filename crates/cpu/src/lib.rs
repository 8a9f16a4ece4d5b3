//! The CPU backend: scalar reference kernels (the specification), SIMD fast
//! paths selected once at run time, and the rayon pool that spreads work over
//! cores.
//!
//! Invariant: every fast kernel has a scalar twin in `kernels::reference` and
//! is tested against it.

mod dispatch;
pub mod kernels;
mod matmul;
pub mod ops;

use hearth_core::{Activation, AttentionShape, AttentionSpan, Backend, BackendError, RopeParams, TokenId, WeightView};

pub use dispatch::{kernels as selected_kernels, reference_kernels, Kernels};
pub use matmul::{get_rows, matmul};

/// The CPU implementation of [`Backend`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    /// A backend using the current rayon pool.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!("cpu ({}, {} threads)", dispatch::kernels().isa, rayon::current_num_threads())
    }

    fn supports(&self, ty: hearth_core::GgmlType) -> bool {
        kernels::reference::is_supported(ty)
    }

    fn matmul(&self, w: &WeightView<'_>, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), BackendError> {
        matmul::matmul(w.ty, w.data, w.rows, w.cols, x, n, out).map_err(|e| BackendError::UnsupportedType(e.0))
    }

    fn get_rows(&self, w: &WeightView<'_>, ids: &[TokenId], out: &mut [f32]) -> Result<(), BackendError> {
        matmul::get_rows(w.ty, w.data, w.cols, ids, out).map_err(|e| BackendError::UnsupportedType(e.0))
    }

    fn rms_norm(&self, x: &mut [f32], dim: usize, weight: &[f32], eps: f32) {
        ops::rms_norm(x, dim, weight, eps);
    }

    fn rope(&self, x: &mut [f32], head_dim: usize, positions: &[usize], params: &RopeParams) {
        ops::rope(x, head_dim, positions, params);
    }

    fn gated_activation(&self, gate: &mut [f32], up: &[f32], act: Activation) {
        ops::gated_activation(gate, up, act);
    }

    fn attention(&self, q: &[f32], shape: &AttentionShape, spans: &[AttentionSpan<'_>], out: &mut [f32]) {
        ops::attention(q, shape, spans, out);
    }
}
