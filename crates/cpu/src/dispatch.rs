//! Runtime selection of the kernel set, done once per process.

use std::sync::OnceLock;

use hearth_core::GgmlType;

use crate::kernels::quant_dot::{self, Q8Row};
use crate::kernels::reference;

/// `gemm_tile(w, rows, x, n, k, out)`: see `x86::gemm_tile`.
pub type GemmTileFn = fn(&[f32], usize, &[f32], usize, usize, &mut [f32]);

/// The kernels picked for this CPU.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Name of the instruction set in use, for logs and benches.
    pub isa: &'static str,
    /// Dot product of two f32 slices.
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// Tile GEMM: `out[r*n+t] = w[r]·x[t]` (see `x86::gemm_tile`).
    pub gemm_tile: GemmTileFn,
    /// Quantized weight row · quantized activations (see `quant_dot::vec_dot`).
    pub quant_dot: QuantDotFn,
}

/// `quant_dot(weight_type, weight_row, activations)`.
pub type QuantDotFn = fn(GgmlType, &[u8], &Q8Row) -> f32;

fn gemm_tile_reference(w: &[f32], rows: usize, x: &[f32], n: usize, k: usize, out: &mut [f32]) {
    for r in 0..rows {
        for t in 0..n {
            out[r * n + t] = reference::dot(&w[r * k..r * k + k], &x[t * k..t * k + k]);
        }
    }
}

/// The portable kernel set (also the fallback on CPUs without AVX2).
#[must_use]
pub fn reference_kernels() -> Kernels {
    Kernels { isa: "scalar", dot: reference::dot, gemm_tile: gemm_tile_reference, quant_dot: quant_dot::vec_dot }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn detect() -> Kernels {
    if std::env::var_os("HEARTH_FORCE_SCALAR").is_none()
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        // SAFETY: both wrappers are only installed after the features were detected.
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            unsafe { crate::kernels::x86::dot(a, b) }
        }
        fn gemm(w: &[f32], rows: usize, x: &[f32], n: usize, k: usize, out: &mut [f32]) {
            unsafe { crate::kernels::x86::gemm_tile(w, rows, x, n, k, out) }
        }
        fn qdot(ty: GgmlType, w: &[u8], a: &Q8Row) -> f32 {
            unsafe { crate::kernels::x86::quant_vec_dot(ty, w, a) }
        }
        return Kernels { isa: "avx2+fma", dot, gemm_tile: gemm, quant_dot: qdot };
    }
    reference_kernels()
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Kernels {
    reference_kernels()
}

/// The kernel set for this machine (detected on first use).
pub fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(detect)
}
