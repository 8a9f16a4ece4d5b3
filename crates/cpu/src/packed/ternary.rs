//! Ternary weights (`TQ1_0`, `TQ2_0`, `I2_S`) repacked at load time as
//! 2-bit codes for the integer kernels: 2.06 bits per weight read per
//! token (2.13 for `I2_S`, whose one f32 scale per tensor is repeated per
//! row and super-block so all three share one kernel).
//!
//! Weights are `scale · (code − 1)` with codes in {0, 1, 2}. Rows are taken
//! 8 at a time (a group, one 8-lane vector of outputs, as in [`super`]);
//! columns 256 at a time (a super-block, ggml's `QK_K`, one scale per row).
//! Inside a super-block, *lane* `L` (0..8) is the set of elements `e` with
//! `(e mod 32) div 4 = L`: 8 runs of 4 elements, one in each 32-element
//! block `b`. The 64 bytes of a (group, super-block, lane) hold those 8 runs
//! for the 8 rows: byte `32·(b div 4) + 4·row + j`, bits `2·(b mod 4)`, so two
//! 32-byte loads, shifts and masks give the 8 code vectors of one
//! `vpdpbusd` each.
//!
//! Why lanes: llama.cpp's `TQ1_0`/`TQ2_0` dot products (AVX2) keep eight
//! partial sums per row, exactly these lanes, and add them at the end. The
//! float order is part of the result, so [`row_dot`] — the specification
//! the SIMD kernels reproduce bit for bit — follows it: per super-block and
//! lane, the exact integer `Σ code·a − Σ a[32L..32L+32]` (ggml subtracts
//! the block sums lane-wise), then `acc_L = fma(isum, d_w·d_a, acc_L)`, and
//! finally `((acc0+acc4) + (acc2+acc6)) + ((acc1+acc5) + (acc3+acc7))`.
//! With it, this engine's ternary matmuls equal llama.cpp's bit for bit.

use hearth_core::GgmlType;

use super::acts::QuantizedActs;
use super::{Scales, GROUP};
use crate::kernels::ternary;

/// Columns per super-block (one scale per row).
pub const SUPER: usize = 256;
/// Lanes (partial sums) per row.
pub const LANES: usize = 8;
/// Code bytes per (group, super-block, lane): 8 blocks × 8 rows × 4 codes × 2 bits.
pub const LANE_BYTES: usize = 64;
/// Code bytes per (group, super-block).
pub const SUPER_BYTES: usize = LANES * LANE_BYTES;

/// A ternary weight matrix in 2-bit packed form (rows padded to a multiple of 8).
#[derive(Debug, Clone)]
pub struct TernaryMatrix {
    /// The source type.
    pub ty: GgmlType,
    /// Output features (unpadded).
    pub rows: usize,
    /// Input features (a multiple of 256).
    pub cols: usize,
    /// `[group][super-block][lane][64]`.
    pub codes: Vec<u8>,
    /// `[group][super-block][8]`: f16 for `TQ1_0`/`TQ2_0` (exact copies), f32 for `I2_S`.
    pub scales: Scales,
}

/// Codes of one source row and its scale per super-block.
struct Row {
    codes: Vec<u8>,
    scales: Vec<f32>,
}

impl TernaryMatrix {
    /// Repacks `rows × cols` weights of `ty` from their file encoding (for
    /// `I2_S`, `data` includes the trailing scale). `None` when `ty` is not
    /// ternary or `cols` is not a multiple of 256.
    ///
    /// # Panics
    /// When `data` is shorter than the tensor (sizes are validated at load).
    #[must_use]
    pub fn pack(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !matches!(ty, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S) || !cols.is_multiple_of(SUPER) {
            return None;
        }
        let size = ty.tensor_bytes(cols, rows as u64)?;
        assert!(data.len() as u64 >= size, "ternary matrix data too short");
        let supers = cols / SUPER;
        let groups = rows.div_ceil(GROUP);
        let mut m = Self {
            ty,
            rows,
            cols,
            codes: vec![0; groups * supers * SUPER_BYTES],
            scales: Scales::flat(ty != GgmlType::I2_S, groups * supers * GROUP),
        };
        let row_bytes = ty.row_bytes(cols)?;
        let i2_scale = (ty == GgmlType::I2_S).then(|| ternary::i2_s_scale(data, rows * cols));
        for r in 0..rows {
            let src = &data[r * row_bytes..(r + 1) * row_bytes];
            let row = match i2_scale {
                Some(d) => Row { codes: ternary::decode_i2_s_row(src), scales: vec![d; supers] },
                None => decode_tq_row(ty, src),
            };
            m.store_row(r, &row);
        }
        // Padding rows keep code 0 and scale 0: they add exact zeros to unused lanes.
        Some(m)
    }

    fn store_row(&mut self, r: usize, row: &Row) {
        for (c, &code) in row.codes.iter().enumerate() {
            let (i, shift) = self.code_slot(r, c);
            self.codes[i] |= (code & 3) << shift;
        }
        for (s, &d) in row.scales.iter().enumerate() {
            let i = self.scale_index(r, s);
            self.scales.set(i, d);
        }
    }

    /// Byte index and bit shift of the code of element `(r, c)`.
    fn code_slot(&self, r: usize, c: usize) -> (usize, u32) {
        let (g, row, s, e) = (r / GROUP, r % GROUP, c / SUPER, c % SUPER);
        let (b, lane, j) = (e / 32, (e % 32) / 4, e % 4);
        let base = ((g * (self.cols / SUPER) + s) * LANES + lane) * LANE_BYTES;
        (base + 32 * (b / 4) + 4 * row + j, 2 * (b % 4) as u32)
    }

    /// Code (0..=3; 3 never occurs in valid files) of element `(r, c)`.
    #[must_use]
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let (i, shift) = self.code_slot(r, c);
        (self.codes[i] >> shift) & 3
    }

    /// Index into `scales` of row `r`'s super-block `s`.
    #[must_use]
    pub fn scale_index(&self, r: usize, s: usize) -> usize {
        ((r / GROUP) * (self.cols / SUPER) + s) * GROUP + r % GROUP
    }

    /// Row `r` in f32 (equals the source's dequantization).
    #[must_use]
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        (0..self.cols)
            .map(|c| self.scales.get(self.scale_index(r, c / SUPER)) * (f32::from(self.code(r, c)) - 1.0))
            .collect()
    }

    /// Row groups (rows / 8, rounded up).
    #[must_use]
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    /// Bytes held (what a decode step reads).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.codes.len() + self.scales.bytes()
    }
}

fn decode_tq_row(ty: GgmlType, src: &[u8]) -> Row {
    let decode = if ty == GgmlType::TQ1_0 { ternary::decode_tq1_0 } else { ternary::decode_tq2_0 };
    let mut row = Row { codes: Vec::with_capacity(src.len() * 4), scales: Vec::new() };
    for block in src.chunks_exact(ty.type_size()) {
        let (codes, d) = decode(block);
        row.codes.extend_from_slice(&codes);
        row.scales.push(d);
    }
    row
}

/// ggml's `hsum_float_8`: the order in which llama.cpp adds the lanes.
#[must_use]
pub fn sum_lanes(l: &[f32; LANES]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|i| l[i] + l[i + 4]);
    (r[0] + r[2]) + (r[1] + r[3])
}

/// The specification: weight row `r` against activation row `t` (see the module docs).
#[must_use]
pub fn row_dot(m: &TernaryMatrix, r: usize, a: &QuantizedActs, t: usize) -> f32 {
    let x = a.row(t);
    let mut lanes = [0f32; LANES];
    for s in 0..m.cols / SUPER {
        let d = m.scales.get(m.scale_index(r, s)) * a.scale(t, s * SUPER / 32);
        for (lane, acc) in lanes.iter_mut().enumerate() {
            let mut isum = 0i32;
            for b in 0..8 {
                for j in 0..4 {
                    let c = s * SUPER + 32 * b + 4 * lane + j;
                    isum += i32::from(m.code(r, c)) * i32::from(x[c]);
                }
            }
            isum -= a.sub_sum(t, s * (SUPER / 32) + lane, 32);
            *acc = (isum as f32).mul_add(d, *acc);
        }
    }
    sum_lanes(&lanes)
}

/// `out[t * m.rows + r] = W[r] · a[t]` by the specification.
///
/// # Panics
/// When shapes disagree.
pub fn gemm(m: &TernaryMatrix, a: &QuantizedActs, out: &mut [f32]) {
    assert!(a.cols == m.cols && out.len() >= a.n * m.rows);
    for t in 0..a.n {
        for r in 0..m.rows {
            out[t * m.rows + r] = row_dot(m, r, a, t);
        }
    }
}
