//! The kernel set: one table of every kernel family, chosen once per
//! process from what the CPU has and what the caller asked for
//! ([`KernelChoice`], passed by [`crate::CpuBackend::new`]). The instruction
//! set is a property of the machine, so the table is process-wide; the
//! choice is the caller's, never the environment's.

use std::sync::OnceLock;

use crate::kernels::reference;
use crate::packed::acts::QuantizedActs;
use crate::packed::ternary::TernaryMatrix;
use crate::packed::ternary_lut::{self, LutGroupFn};
use crate::packed::{self, PackedMatrix, GROUP};
use crate::pool::SharedOut;

/// `gemm_tile(w, rows, x, n, k, out)`: see `x86::gemm_tile`.
pub type GemmTileFn = fn(&[f32], usize, &[f32], usize, usize, &mut [f32]);

/// `gemm_acc(c, a, b, m, k, n)`: see `reference::gemm_acc`.
pub type GemmAccFn = fn(&mut [f32], &[f32], &[f32], usize, usize, usize);

/// `packed_group(m, g, acts, out)`: rows `8g..8g+8` of `m` against every row
/// of `acts`, written to `out[t * m.rows + r]`.
pub type PackedGroupFn = fn(&PackedMatrix, usize, &QuantizedActs, &SharedOut);

/// `ternary_group(m, g, acts, out)`: as [`PackedGroupFn`] for 2-bit ternary
/// matrices, whose groups are `packed::ternary::ROWS` rows.
pub type TernaryGroupFn = fn(&TernaryMatrix, usize, &QuantizedActs, &SharedOut);

/// The kernels picked for this CPU.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Name of the instruction set in use, for logs and benches.
    pub isa: &'static str,
    /// Dot product of two f32 slices.
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// Flash attention's `q·k` in ggml's order (`reference::dot_f16_ggml`).
    pub dot_f16_ggml: fn(&[f32], &[f32]) -> f32,
    /// `ggml_vec_dot_f32`'s order (`reference::dot_f32_ggml`).
    pub dot_f32_ggml: fn(&[f32], &[f32]) -> f32,
    /// F16 weights widened for a product (`reference::f16_to_f32`).
    pub f16_to_f32: fn(&[u16], &mut [f32]),
    /// `dot_f16_ggml` over F16 weights as stored (`reference::dot_f16w_ggml`).
    pub dot_f16w_ggml: fn(&[u16], &[f32]) -> f32,
    /// tinyBLAS's 16-lane dot (`reference::dot_lanes16`).
    pub dot_lanes16: fn(&[f32], &[f32]) -> f32,
    /// ggml's `ggml_vec_soft_max_f32` (`reference::soft_max_f32`).
    pub soft_max: fn(&mut [f32], f32) -> f64,
    /// Tile GEMM on f32 weights: `out[r*n+t] = w[r]·x[t]`.
    pub gemm_tile: GemmTileFn,
    /// `c += a·b` in ggml's `simd_gemm` order (`reference::gemm_acc`).
    pub gemm_acc: GemmAccFn,
    /// Packed quantized matmul of one row group.
    pub packed_group: PackedGroupFn,
    /// Ternary matmul of one row group.
    pub ternary_group: TernaryGroupFn,
    /// Ternary matmul of one row group in the lookup-table layout.
    pub lut_group: LutGroupFn,
    /// `acc = round_f16(fma(v, s, acc))` (flash-attention V accumulation).
    pub mad_round_f16: fn(&mut [f32], &[f32], f32),
    /// `acc = round_f16(acc · s)`.
    pub scale_round_f16: fn(&mut [f32], f32),
    /// `gate = silu(gate) · up` with ggml's `expf`.
    pub silu_mul: fn(&mut [f32], &[f32]),
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

fn ternary_group_reference(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    use crate::packed::ternary::ROWS;
    let rows = (g * ROWS..(g + 1) * ROWS).filter(|&r| r < m.rows);
    for r in rows {
        for t in 0..a.n {
            // SAFETY: one output element, owned by this group's task.
            #[allow(unsafe_code)]
            let dst = unsafe { out.slice(t * m.rows + r, 1) };
            dst[0] = packed::ternary::row_dot(m, r, a, t);
        }
    }
}

/// The portable kernel set (also the fallback on CPUs without AVX2).
#[must_use]
pub fn reference_kernels() -> Kernels {
    Kernels {
        isa: "scalar",
        dot: reference::dot,
        dot_f16_ggml: reference::dot_f16_ggml,
        dot_f32_ggml: reference::dot_f32_ggml,
        f16_to_f32: reference::f16_to_f32,
        dot_f16w_ggml: reference::dot_f16w_ggml,
        dot_lanes16: reference::dot_lanes16,
        soft_max: reference::soft_max_f32,
        gemm_tile: gemm_tile_reference,
        gemm_acc: reference::gemm_acc,
        packed_group: packed_group_reference,
        ternary_group: ternary_group_reference,
        lut_group: ternary_lut::group_reference,
        mad_round_f16: reference::mad_round_f16,
        scale_round_f16: reference::scale_round_f16,
        quantize_block_q8: reference::quantize_block_q8,
        silu_mul: reference::silu_mul,
    }
}

/// Which kernels to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KernelChoice {
    /// The most capable kernels of each family this CPU runs.
    #[default]
    Best,
    /// No VNNI instructions (AVX2 `maddubs` instead): for comparisons.
    NoVnni,
    /// The scalar reference everywhere: the specification, slowly.
    Scalar,
}

/// The last (most capable) variant of a family that `allowed` admits.
fn pick<F: Copy>(variants: &[(&'static str, F)], allowed: impl Fn(&str) -> bool) -> Option<(&'static str, F)> {
    variants.iter().rev().find(|(name, _)| allowed(name)).copied()
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn detect(choice: KernelChoice) -> Kernels {
    use crate::packed::x86 as px;
    // SAFETY (all wrappers): installed only after their features were detected.
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        unsafe { crate::kernels::x86::dot(a, b) }
    }
    fn gemm(w: &[f32], rows: usize, x: &[f32], n: usize, k: usize, out: &mut [f32]) {
        unsafe { crate::kernels::x86::gemm_tile(w, rows, x, n, k, out) }
    }
    fn dot_f16(a: &[f32], b: &[f32]) -> f32 {
        unsafe { crate::kernels::x86::dot_f16_ggml(a, b) }
    }
    fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        unsafe { crate::kernels::x86::dot_f32_ggml(a, b) }
    }
    fn dot_f16w(w: &[u16], x: &[f32]) -> f32 {
        unsafe { crate::kernels::x86::dot_f16w_ggml(w, x) }
    }
    fn widen_f16(src: &[u16], dst: &mut [f32]) {
        unsafe { crate::kernels::x86::f16_to_f32(src, dst) }
    }
    fn dot16(a: &[f32], b: &[f32]) -> f32 {
        unsafe { crate::kernels::x86::dot_lanes16(a, b) }
    }
    fn soft_max(x: &mut [f32], max: f32) -> f64 {
        unsafe { crate::kernels::x86::soft_max_f32(x, max) }
    }
    fn gemm_acc(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
        unsafe { crate::kernels::x86::gemm_acc(c, a, b, m, k, n) }
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
    fn silu_mul(gate: &mut [f32], up: &[f32]) {
        unsafe { crate::kernels::x86::silu_mul(gate, up) }
    }
    if choice == KernelChoice::Scalar
        || !is_x86_feature_detected!("avx2")
        || !is_x86_feature_detected!("fma")
        || !is_x86_feature_detected!("f16c")
    {
        return reference_kernels();
    }
    // Each family lists its variants from least to most capable; each gets
    // its own best variant that the choice allows.
    let allowed = |name: &str| choice != KernelChoice::NoVnni || !name.contains("vnni");
    let (Some((isa, packed_group)), Some((_, ternary_group)), Some((_, lut_group))) = (
        pick(&px::available(), allowed),
        pick(&crate::packed::ternary_x86::available(), allowed),
        pick(&ternary_lut::kernel_variants(), allowed),
    ) else {
        return reference_kernels();
    };
    Kernels {
        isa,
        dot,
        dot_f16_ggml: dot_f16,
        dot_f32_ggml: dot_f32,
        f16_to_f32: widen_f16,
        dot_f16w_ggml: dot_f16w,
        dot_lanes16: dot16,
        soft_max,
        gemm_tile: gemm,
        gemm_acc,
        packed_group,
        ternary_group,
        lut_group,
        mad_round_f16: mad,
        scale_round_f16: scale,
        quantize_block_q8: quantize,
        silu_mul,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect(_choice: KernelChoice) -> Kernels {
    reference_kernels()
}

static CHOSEN: OnceLock<(KernelChoice, Kernels)> = OnceLock::new();

/// The process's kernel set for `choice`. The first choice made stands; a
/// different one afterwards is refused (returns the standing choice).
pub fn choose(choice: KernelChoice) -> Result<&'static Kernels, KernelChoice> {
    let (standing, k) = CHOSEN.get_or_init(|| (choice, detect(choice)));
    if *standing == choice {
        Ok(k)
    } else {
        Err(*standing)
    }
}

/// The kernel set in use (the best one, if nothing chose before).
pub fn kernels() -> &'static Kernels {
    &CHOSEN.get_or_init(|| (KernelChoice::Best, detect(KernelChoice::Best))).1
}
