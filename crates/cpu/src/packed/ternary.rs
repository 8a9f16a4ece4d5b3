//! Ternary weights (`TQ1_0`, `TQ2_0`, `I2_S`) repacked at load time as
//! 2-bit codes for the integer kernels: 2.06 bits per weight read per
//! token (2.13 for `I2_S`, whose one f32 scale per tensor is repeated per
//! row and super-block so all three share one kernel).
//!
//! Weights are `scale · (code − 1)` with codes in {0, 1, 2}. Rows are taken
//! [`ROWS`] = 16 at a time (a group: one 512-bit vector of outputs, or two
//! 256-bit halves); columns 256 at a time (a super-block, ggml's `QK_K`,
//! one scale per row). Inside a super-block, *lane* `L` (0..8) is the set of
//! elements `e` with `(e mod 32) div 4 = L`: 8 runs of 4 elements, one in
//! each 32-element block `b`.
//!
//! Byte layout of a (group, super-block), 1024 bytes: the code of element
//! `32b + 4L + j` of group row `row` sits in byte `64·(2b + L div 4) + 4·row + j`
//! at bits `2·(L mod 4)`. So one 64-byte load holds block `b`'s runs of four
//! lanes for all 16 rows, and masking it with `3 << 2k` (no shift) yields
//! lane `4h + k`'s codes times `4^k`: a `vpdpbusd` per (block, lane) sums
//! `4^k · Σ code·a` exactly, and one arithmetic shift per lane and
//! super-block removes the factor. (A layout with a lane's blocks in one
//! byte needs a shift *and* a mask per code vector, which made the earlier
//! 8-row kernel compute-bound at decode.)
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
use super::Scales;
use crate::kernels::ternary;
use crate::pool::ThreadPool;

/// Rows per group.
pub const ROWS: usize = 16;
/// Columns per super-block (one scale per row).
pub const SUPER: usize = 256;
/// Lanes (partial sums) per row.
pub const LANES: usize = 8;
/// Bytes of one (group, super-block, block, lane half): 16 rows × 4 codes.
pub const CHUNK_BYTES: usize = 64;
/// Code bytes per (group, super-block).
pub const SUPER_BYTES: usize = ROWS * SUPER / 4;

/// A ternary weight matrix in 2-bit packed form (rows padded to a multiple of 16).
#[derive(Debug, Clone)]
pub struct TernaryMatrix {
    /// The source type.
    pub ty: GgmlType,
    /// Output features (unpadded).
    pub rows: usize,
    /// Input features (a multiple of 256).
    pub cols: usize,
    /// `[group][super-block][1024]`, see the module docs.
    pub codes: Vec<u8>,
    /// `[group][super-block][16]`: f16 for `TQ1_0`/`TQ2_0` (exact copies), f32 for `I2_S`.
    pub scales: Scales,
}

impl TernaryMatrix {
    /// Repacks `rows × cols` weights of `ty` from their file encoding (for
    /// `I2_S`, `data` includes the trailing scale). `None` when `ty` is not
    /// ternary or `cols` is not a multiple of 256. Groups are packed in
    /// parallel on the worker pool: a 2B-parameter model repacks in well
    /// under a second.
    ///
    /// # Panics
    /// When `data` is shorter than the tensor (sizes are validated at load).
    #[must_use]
    pub fn pack(pool: &ThreadPool, ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !matches!(ty, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S) || !cols.is_multiple_of(SUPER) {
            return None;
        }
        let size = ty.tensor_bytes(cols, rows as u64)?;
        assert!(data.len() as u64 >= size, "ternary matrix data too short");
        let supers = cols / SUPER;
        let groups = rows.div_ceil(ROWS);
        let row_bytes = ty.row_bytes(cols)?;
        let source = Source {
            ty,
            data,
            row_bytes,
            i2_scale: (ty == GgmlType::I2_S).then(|| ternary::i2_s_scale(data, rows * cols)),
        };
        let mut codes = vec![0u8; groups * supers * SUPER_BYTES];
        pool.for_each_chunk_mut(&mut codes, supers * SUPER_BYTES, &|g, out| {
            for (s, out) in out.chunks_exact_mut(SUPER_BYTES).enumerate() {
                for row in 0..ROWS.min(rows - g * ROWS) {
                    store_super(out, row, &source.super_codes(g * ROWS + row, s).0);
                }
            }
        });
        // Padding rows keep code 0 and scale 0: they add exact zeros to unused lanes.
        let mut scales = Scales::flat(ty != GgmlType::I2_S, groups * supers * ROWS);
        for r in 0..rows {
            for s in 0..supers {
                scales.set(scale_index(cols, r, s), source.scale(r, s));
            }
        }
        Some(Self { ty, rows, cols, codes, scales })
    }

    /// Code (0..=3; 3 never occurs in valid files) of element `(r, c)`.
    #[must_use]
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let (s, e) = (c / SUPER, c % SUPER);
        let base = ((r / ROWS) * (self.cols / SUPER) + s) * SUPER_BYTES;
        let (i, shift) = code_slot(r % ROWS, e);
        (self.codes[base + i] >> shift) & 3
    }

    /// The 256 codes of row `r` in super-block `s` (what [`Self::code`]
    /// reads one at a time, a whole block's bytes at once).
    #[must_use]
    pub fn super_codes(&self, r: usize, s: usize) -> [u8; SUPER] {
        let base = ((r / ROWS) * (self.cols / SUPER) + s) * SUPER_BYTES + 4 * (r % ROWS);
        let mut codes = [0u8; SUPER];
        for b in 0..8 {
            for h in 0..2 {
                let bytes = &self.codes[base + CHUNK_BYTES * (2 * b + h)..][..4];
                for (j, &byte) in bytes.iter().enumerate() {
                    for k in 0..4 {
                        codes[32 * b + 4 * (4 * h + k) + j] = (byte >> (2 * k)) & 3;
                    }
                }
            }
        }
        codes
    }

    /// Index into `scales` of row `r`'s super-block `s`.
    #[must_use]
    pub fn scale_index(&self, r: usize, s: usize) -> usize {
        scale_index(self.cols, r, s)
    }

    /// Row `r` in f32 (equals the source's dequantization).
    #[must_use]
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        (0..self.cols)
            .map(|c| self.scales.get(self.scale_index(r, c / SUPER)) * (f32::from(self.code(r, c)) - 1.0))
            .collect()
    }

    /// Row groups (rows / 16, rounded up).
    #[must_use]
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(ROWS)
    }

    /// Bytes held (what a decode step reads).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.codes.len() + self.scales.bytes()
    }
}

fn scale_index(cols: usize, r: usize, s: usize) -> usize {
    ((r / ROWS) * (cols / SUPER) + s) * ROWS + r % ROWS
}

/// Byte (within a group's super-block) and bit shift of element `e` of group row `row`.
fn code_slot(row: usize, e: usize) -> (usize, u32) {
    let (b, lane, j) = (e / 32, (e % 32) / 4, e % 4);
    (CHUNK_BYTES * (2 * b + lane / 4) + 4 * row + j, 2 * (lane % 4) as u32)
}

/// Writes one row's 256 codes into its bytes of a (group, super-block):
/// each byte gathers four lanes' codes of one element (see the module docs).
fn store_super(out: &mut [u8], row: usize, codes: &[u8; SUPER]) {
    for b in 0..8 {
        for h in 0..2 {
            for j in 0..4 {
                let code = |k: usize| (codes[32 * b + 4 * (4 * h + k) + j] & 3) << (2 * k);
                out[CHUNK_BYTES * (2 * b + h) + 4 * row + j] = code(0) | code(1) | code(2) | code(3);
            }
        }
    }
}

/// A tensor in its file encoding.
struct Source<'a> {
    ty: GgmlType,
    data: &'a [u8],
    row_bytes: usize,
    /// `I2_S`'s per-tensor scale.
    i2_scale: Option<f32>,
}

impl Source<'_> {
    /// Codes and scale of super-block `s` of row `r`.
    fn super_codes(&self, r: usize, s: usize) -> ([u8; SUPER], f32) {
        let row = &self.data[r * self.row_bytes..(r + 1) * self.row_bytes];
        match (self.ty, self.i2_scale) {
            (GgmlType::I2_S, Some(d)) => {
                let bytes = SUPER / 4;
                let mut codes = [0u8; SUPER];
                ternary::decode_i2_s_into(&row[s * bytes..(s + 1) * bytes], &mut codes);
                (codes, d)
            }
            (GgmlType::TQ1_0, _) => ternary::decode_tq1_0(&row[s * self.ty.type_size()..]),
            _ => ternary::decode_tq2_0(&row[s * self.ty.type_size()..]),
        }
    }

    /// Scale of super-block `s` of row `r`: the block's trailing f16, or
    /// `I2_S`'s one scale.
    fn scale(&self, r: usize, s: usize) -> f32 {
        if let Some(d) = self.i2_scale {
            return d;
        }
        let at = r * self.row_bytes + (s + 1) * self.ty.type_size() - 2;
        half::f16::from_le_bytes([self.data[at], self.data[at + 1]]).to_f32()
    }
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
