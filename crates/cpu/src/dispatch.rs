//! Runtime selection of the kernel set, done once per process.

use std::sync::OnceLock;

use crate::kernels::reference;
use crate::packed::acts::QuantizedActs;
use crate::packed::{self, PackedMatrix, GROUP};
use crate::pool::SharedOut;

/// `gemm_tile(w, rows, x, n, k, out)`: see `x86::gemm_tile`.
pub type GemmTileFn = fn(&[f32], usize, &[f32], usize, usize, &mut [f32]);

/// `packed_group(m, g, acts, out)`: rows `8g..8g+8` of `m` against every row
/// of `acts`, written to `out[t * m.rows + r]`.
pub type PackedGroupFn = fn(&PackedMatrix, usize, &QuantizedActs, &SharedOut);

/// The kernels picked for this CPU.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Name of the instruction set in use, for logs and benches.
    pub isa: &'static str,
    /// Dot product of two f32 slices.
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// Tile GEMM on f32 weights: `out[r*n+t] = w[r]·x[t]`.
    pub gemm_tile: GemmTileFn,
    /// Packed quantized matmul of one row group.
    pub packed_group: PackedGroupFn,
    /// `acc = round_f16(fma(v, s, acc))` (flash-attention V accumulation).
    pub mad_round_f16: fn(&mut [f32], &[f32], f32),
    /// `acc = round_f16(acc · s)`.
    pub scale_round_f16: fn(&mut [f32], f32),
    /// 32 activations to 8-bit codes; returns the block scale.
    pub quantize_block_q8: fn(&[f32], &mut [i8]) -> f32,
}

fn gemm_tile_reference(w: &[f32], rows: usize, x: &[f32], n: usize, k: usize, out: &mut [f32]) {
    for r in 0..rows {
        for t in 0..n {
            out[r * n + t] = reference::dot(&w[r * k..r * k + k], &x[t * k..t * k + k]);
        }
    }
}

fn packed_group_reference(m: &PackedMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    let rows = (g * GROUP..(g + 1) * GROUP).filter(|&r| r < m.rows);
    for r in rows {
        for t in 0..a.n {
            // SAFETY: one output element, owned by this group's task.
            #[allow(unsafe_code)]
            let dst = unsafe { out.slice(t * m.rows + r, 1) };
            dst[0] = packed::reference::row_dot(m, r, a, t);
        }
    }
}

/// The portable kernel set (also the fallback on CPUs without AVX2).
#[must_use]
pub fn reference_kernels() -> Kernels {
    Kernels {
        isa: "scalar",
        dot: reference::dot,
        gemm_tile: gemm_tile_reference,
        packed_group: packed_group_reference,
        mad_round_f16: reference::mad_round_f16,
        scale_round_f16: reference::scale_round_f16,
        quantize_block_q8: reference::quantize_block_q8,
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn detect() -> Kernels {
    use crate::packed::x86 as px;
    // SAFETY (all wrappers): installed only after their features were detected.
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        unsafe { crate::kernels::x86::dot(a, b) }
    }
    fn gemm(w: &[f32], rows: usize, x: &[f32], n: usize, k: usize, out: &mut [f32]) {
        unsafe { crate::kernels::x86::gemm_tile(w, rows, x, n, k, out) }
    }
    fn mad(acc: &mut [f32], v: &[f32], s: f32) {
        unsafe { crate::kernels::x86::mad_round_f16(acc, v, s) }
    }
    fn scale(acc: &mut [f32], s: f32) {
        unsafe { crate::kernels::x86::scale_round_f16(acc, s) }
    }
    fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
        unsafe { crate::kernels::x86::quantize_block_q8(x, q) }
    }
    if std::env::var_os("HEARTH_FORCE_SCALAR").is_some()
        || !is_x86_feature_detected!("avx2")
        || !is_x86_feature_detected!("fma")
        || !is_x86_feature_detected!("f16c")
    {
        return reference_kernels();
    }
    // The last variant listed is the most capable.
    let variants = px::available();
    let pick = if std::env::var_os("HEARTH_NO_VNNI").is_some() { variants.first() } else { variants.last() };
    let Some(&(isa, packed_group)) = pick else { return reference_kernels() };
    Kernels {
        isa,
        dot,
        gemm_tile: gemm,
        packed_group,
        mad_round_f16: mad,
        scale_round_f16: scale,
        quantize_block_q8: quantize,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Kernels {
    reference_kernels()
}

/// The kernel set for this machine (detected on first use). Environment:
/// `HEARTH_FORCE_SCALAR` selects the scalar reference, `HEARTH_NO_VNNI`
/// the plain AVX2 kernels.
pub fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(detect)
}
