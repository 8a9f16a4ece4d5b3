//! Quantized weights repacked at load time for the integer matmul kernels.
//!
//! Every supported ggml block type is a grid of small unsigned integer codes
//! with a scale (and for some types a minimum) per *sub-block* of 16 or 32
//! elements: `w = scale · (code − offset) + min`. Packing extracts exactly
//! that (so dequantizing a packed matrix equals ggml's dequantization bit
//! for bit, see the tests) and lays it out for SIMD:
//!
//! - rows are taken 8 at a time (a *group*); a group's output is one 8-lane
//!   vector, so results land in the output contiguously with no transpose;
//! - within a 32-element block, the codes of the 8 rows are interleaved in
//!   runs of 4 (`[row0 e0..e3][row1 e0..e3]…[row7 e0..e3]`, then e4..e7, …):
//!   one 32-byte load × one broadcast 4-byte activation group = one `vpdpbusd`
//!   giving 8 row partial sums, no horizontal reduction anywhere;
//! - codes of ≤ 4 bits are stored two per byte (group g in the low nibble,
//!   group g+4 in the high nibble of the same byte); 5-bit codes (Q5_0,
//!   Q5_1, Q5_K) add a plane of their fifth bits after the nibbles, four
//!   bytes per row (see `PackedMatrix::slot_in_block`), so a decode reads 5
//!   bits per weight, not a byte; Q6_K two planes; 2- and 3-bit codes (Q2_K,
//!   Q3_K) take 2 bits, four per byte (and a plane for the third);
//! - scales (and mins) of a group's sub-block are 8 consecutive values: f16
//!   copies for the 32-element types (exact), and for K-quants ggml's
//!   factors ([`Scales::Super`]): an f16 `d` (and `dmin`) per 256 elements
//!   and a small integer scale (and minimum) per sub-block, as bytes — e.g.
//!   4.625 bits per weight for `Q4_K` instead of 6 — so the kernels sum in
//!   integers as ggml does before its float steps.
//!
//! Activations are quantized to 8-bit blocks of 32 with an f32 scale and
//! per-16 sums (see [`acts`]). The float order of the accumulation is part of
//! the specification ([`reference::gemm`]); the SIMD kernels reproduce it
//! exactly, and tests check the two are bit-identical.

/// Runs a tile kernel over all activation rows of `$a`: whole tiles of
/// `$size` rows as `$full(t)`, the rest one row at a time as `$single(t)`.
/// (A macro, not a closure-taking function: closures would not inherit the
/// kernels' target features.)
macro_rules! row_tiles {
    ($a:expr, $size:expr, |$t:ident| $full:expr, $single:expr) => {{
        let mut $t = 0;
        while $t + $size <= $a.n {
            $full;
            $t += $size;
        }
        while $t < $a.n {
            $single;
            $t += 1;
        }
    }};
}

pub mod acts;
pub mod reference;
pub mod ternary;
pub mod ternary_lut;
#[cfg(target_arch = "x86_64")]
pub(crate) mod ternary_lut_x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod ternary_x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

use half::f16;
use hearth_core::GgmlType;

use crate::kernels::reference::{e8m0_to_f32_half, f16_at, iq4_xs_scale, q3_k_scales, scale_min_k4, IQ4_VALUES, MXFP4_VALUES};
use crate::pool::ThreadPool;

/// Rows per interleaved group (lanes of one 256-bit f32 vector).
pub const GROUP: usize = 8;
/// Elements per interleaved block.
pub const BLOCK: usize = 32;

/// How a weight type maps onto the packed form.
// Independent yes/no properties of a type's encoding, each picked by a const generic in the kernels.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Codes take a byte each (Q8_0); else nibbles or, with `two_bit`, 2
    /// bits each, plus `planes` bit planes.
    pub eight_bit: bool,
    /// Codes are stored in 2 bits, four per byte (Q2_K; Q3_K with a plane).
    pub two_bit: bool,
    /// Bit planes after the low bits, one more bit per code each: 5-bit
    /// codes as nibbles + 1 plane (Q5_0, Q5_1, Q5_K), 6-bit as nibbles + 2
    /// (Q6_K), 3-bit as 2 bits + 1 (Q3_K).
    pub planes: usize,
    /// Scales are E8M0 exponent bytes (MXFP4), kept as stored.
    pub e8m0_scales: bool,
    /// Elements per scale: 16 or 32.
    pub sub: usize,
    /// Subtracted from each code before scaling.
    pub offset: i32,
    /// Each sub-block also has an additive minimum.
    pub has_min: bool,
    /// Scales and mins are stored as f16 (exact for the source type).
    pub f16_scales: bool,
    /// Scales and mins are stored as ggml's factors ([`Scales::Super`]).
    pub super_scales: bool,
    /// Float sums follow ggml's *lanes*: per block, eight partial sums of
    /// four consecutive elements each get their own `fma`, and the eight
    /// are added at the end in `hsum_float_8` order (llama.cpp's x86
    /// `vec_dot` and tinyBLAS kernels for these types; see
    /// `reference::lane_row_dot`). With `super_scales`, the K-quants that
    /// llama.cpp does not repack on x86 (`Q3_K`, `Q5_K`, `Q6_K`, and
    /// `IQ4_XS`): lanes per
    /// super-block in its `vec_dot`, one total in its tiled matmul
    /// (`reference::k_lane_row_dot`). Otherwise one `fma` per sub-block.
    pub lanes: bool,
    /// For repacked super-block layouts (`super_scales` without `lanes`:
    /// llama.cpp's `q4_K_8x8` and `q2_K_8x8`), elements per float step in
    /// its 4-row `gemm` (64 for `Q4_K`, 128 for `Q2_K`; its `gemv` steps by
    /// super-block).
    pub gemm_step: usize,
    /// Codes are nibbles indexing a 16-value grid — [`IQ4_VALUES`] for
    /// `IQ4_NL`/`IQ4_XS`, [`MXFP4_VALUES`] for `MXFP4`: the element is
    /// `scale · value`, read by the kernels as the byte `value + 128` (so
    /// `offset` is 128).
    pub grid: Option<&'static [i8; 16]>,
}

impl Layout {
    /// The layout for `ty`, or `None` when `ty` is not a packable block type.
    #[must_use]
    pub fn for_type(ty: GgmlType) -> Option<Self> {
        use GgmlType as T;
        let l = |eight_bit, sub, offset, has_min, f16_scales| {
            // Q4_0, IQ4_NL, MXFP4, Q4_K and Q2_K are repacked by llama.cpp on x86
            // (`q4_0_8x8`, `iq4_nl_8x8`, `mxfp4_8x8`, `q4_K_8x8`, `q2_K_8x8` with
            // AVX-512), whose kernels sum whole blocks
            // per row; the other 32-element types go through lane-wise `vec_dot` /
            // tinyBLAS, the other K-quants through `vec_dot` / its tiled matmul.
            let lanes = matches!(ty, T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::Q3_K | T::Q5_K | T::Q6_K | T::IQ4_XS);
            let super_scales = matches!(ty, T::Q2_K | T::Q3_K | T::Q4_K | T::Q5_K | T::Q6_K | T::IQ4_XS);
            let gemm_step = match ty {
                T::Q2_K => 128,
                T::Q4_K => 64,
                _ => 0,
            };
            let grid = match ty {
                T::IQ4_NL | T::IQ4_XS => Some(&IQ4_VALUES),
                T::MXFP4 => Some(&MXFP4_VALUES),
                _ => None,
            };
            // `eight_bit` above says the codes exceed 4 bits; 5- and 6-bit
            // types keep nibbles and bit planes instead of a byte per code,
            // 2- and 3-bit types 2 bits per code (and a plane).
            let planes = match ty {
                T::Q5_0 | T::Q5_1 | T::Q5_K | T::Q3_K => 1,
                T::Q6_K => 2,
                _ => 0,
            };
            let two_bit = matches!(ty, T::Q2_K | T::Q3_K);
            let eight_bit = eight_bit && planes == 0;
            Some(Self {
                eight_bit,
                two_bit,
                planes,
                e8m0_scales: ty == T::MXFP4,
                sub,
                offset,
                has_min,
                f16_scales,
                super_scales,
                lanes,
                gemm_step,
                grid,
            })
        };
        match ty {
            T::Q4_0 => l(false, 32, 8, false, true),
            T::Q4_1 => l(false, 32, 0, true, true),
            T::Q5_0 => l(true, 32, 16, false, true),
            T::Q5_1 => l(true, 32, 0, true, true),
            T::Q8_0 => l(true, 32, 128, false, true),
            T::Q2_K => l(false, 16, 0, true, false),
            T::Q3_K => l(false, 16, 4, false, false),
            T::Q4_K => l(false, 32, 0, true, false),
            T::Q5_K => l(true, 32, 0, true, false),
            T::Q6_K => l(true, 16, 32, false, false),
            T::IQ4_NL => l(false, 32, 128, false, true),
            T::IQ4_XS | T::MXFP4 => l(false, 32, 128, false, false),
            _ => None,
        }
    }

    /// Bytes of codes per group and block.
    #[must_use]
    pub fn block_bytes(&self) -> usize {
        self.low_bytes() + self.planes * GROUP * 4
    }

    /// Bytes of the codes' low bits per group and block (the plane follows).
    #[must_use]
    pub fn low_bytes(&self) -> usize {
        GROUP * BLOCK * self.low_bits() / 8
    }

    /// Bits per code before the plane: 8, 4 or 2.
    #[must_use]
    pub fn low_bits(&self) -> usize {
        if self.eight_bit {
            8
        } else if self.two_bit {
            2
        } else {
            4
        }
    }

    /// Sub-blocks per block.
    #[must_use]
    pub fn subs_per_block(&self) -> usize {
        BLOCK / self.sub
    }
}

/// Per-sub-block scales or mins, 8 per (group, sub-block).
#[derive(Debug, Clone)]
pub enum Scales {
    /// Exact copies of the source's f16 values.
    F16(Vec<f16>),
    /// Products computed in f32 (K-quants).
    F32(Vec<f32>),
    /// MXFP4's E8M0 exponent bytes as stored: `2^(e − 128)` each (see
    /// `reference::e8m0_to_f32_half`), a quarter of the bytes of f32.
    E8M0(Vec<u8>),
    /// ggml's two factors: `±d·q` with `d` (f16) per super-block of
    /// [`SUPER`] elements, 8 per (group, super-block), and the integer `q`
    /// per sub-block, 8 per (group, sub-block). `negative` for minimums.
    Super {
        /// `[group][super-block][8]`.
        d: Vec<f16>,
        /// `[group][sub-block][8]`: the 6-bit factors of `Q4_K`/`Q5_K`
        /// (0..63), the 4-bit ones of `Q2_K`, `Q3_K`'s `sc − 32` or
        /// `Q6_K`'s signed 8-bit scales.
        q: Vec<i8>,
        /// Sub-blocks per super-block.
        subs_per_super: usize,
        /// The value is `−d·q` (ggml subtracts `dmin·m`).
        negative: bool,
    },
}

/// Elements per K-quant super-block.
pub const SUPER: usize = 256;

impl Scales {
    /// Storage for `len` sub-block values in the form `l` asks for.
    fn for_layout(l: &Layout, len: usize, negative: bool) -> Self {
        if l.super_scales {
            let subs_per_super = SUPER / l.sub;
            Self::Super { d: vec![f16::ZERO; len / subs_per_super], q: vec![0; len], subs_per_super, negative }
        } else if l.e8m0_scales {
            Self::E8M0(vec![0; len])
        } else {
            Self::flat(l.f16_scales, len)
        }
    }

    /// `len` values stored whole, as f16 or f32.
    pub(crate) fn flat(f16_scales: bool, len: usize) -> Self {
        if f16_scales {
            Self::F16(vec![f16::ZERO; len])
        } else {
            Self::F32(vec![0.0; len])
        }
    }

    /// Value `i`, widened.
    #[must_use]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Self::F16(v) => v[i].to_f32(),
            Self::F32(v) => v[i],
            Self::E8M0(v) => e8m0_to_f32_half(v[i]),
            Self::Super { d, q, negative, .. } => {
                let v = d[self.super_index(i)].to_f32() * f32::from(q[i]);
                if *negative {
                    -v
                } else {
                    v
                }
            }
        }
    }

    /// For [`Scales::Super`]: index into `d` of sub-block value `i`.
    #[must_use]
    pub fn super_index(&self, i: usize) -> usize {
        match self {
            Self::Super { subs_per_super, .. } => (i / GROUP / subs_per_super) * GROUP + i % GROUP,
            _ => i,
        }
    }

    fn set(&mut self, i: usize, x: f32) {
        match self {
            Self::F16(v) => v[i] = f16::from_f32(x),
            Self::F32(v) => v[i] = x,
            // x came from `e8m0_to_f32_half`: its bits give the byte back exactly.
            Self::E8M0(v) => {
                let bits = x.to_bits();
                v[i] = match bits {
                    0x0020_0000 => 0,
                    0x0040_0000 => 1,
                    _ => ((bits >> 23) + 1) as u8,
                };
            }
            Self::Super { .. } => unreachable!("super-block scales are stored by factor"),
        }
    }

    /// Stores value `i` as its factors (`d_super`, an f16 value, is shared
    /// by the sub-blocks of its super-block).
    fn set_factors(&mut self, i: usize, d_super: f32, q_sub: i8) {
        let si = self.super_index(i);
        if let Self::Super { d, q, .. } = self {
            q[i] = q_sub;
            d[si] = f16::from_f32(d_super);
        }
    }

    /// Appends `other`'s values (the next rows of the same matrix).
    fn append(&mut self, other: &Self) {
        match (self, other) {
            (Self::F16(a), Self::F16(b)) => a.extend_from_slice(b),
            (Self::F32(a), Self::F32(b)) => a.extend_from_slice(b),
            (Self::E8M0(a), Self::E8M0(b)) => a.extend_from_slice(b),
            (Self::Super { d, q, .. }, Self::Super { d: d2, q: q2, .. }) => {
                d.extend_from_slice(d2);
                q.extend_from_slice(q2);
            }
            _ => unreachable!("parts of one matrix share their layout"),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::F16(v) => v.len() * 2,
            Self::F32(v) => v.len() * 4,
            Self::E8M0(v) => v.len(),
            Self::Super { d, q, .. } => d.len() * 2 + q.len(),
        }
    }
}

/// A weight matrix in the packed form (rows padded with zeros to a multiple of 8).
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    /// The source type.
    pub ty: GgmlType,
    /// Output features (unpadded).
    pub rows: usize,
    /// Input features (a multiple of the source block size).
    pub cols: usize,
    /// Code layout.
    pub layout: Layout,
    /// `[group][block][block_bytes]`.
    pub codes: Vec<u8>,
    /// `[group][sub-block][8]`.
    pub scales: Scales,
    /// Like `scales`; empty unless `layout.has_min`.
    pub mins: Scales,
    /// Sum every activation row in llama.cpp's one-row order (its
    /// `MUL_MAT_ID` runs repacked Q4_K experts through `gemv` row by row),
    /// not its 4-row `gemm` order. Set for MoE experts.
    pub row_by_row: bool,
}

pub use crate::dispatch::PackedGroupFn as GroupKernel;

pub use crate::dispatch::TernaryGroupFn as TernaryKernel;

/// Every ternary-group kernel this CPU can run, by name, as [`kernel_variants`].
#[must_use]
pub fn ternary_kernel_variants() -> Vec<(&'static str, TernaryKernel)> {
    let mut v: Vec<(&'static str, TernaryKernel)> = vec![("scalar", crate::reference_kernels().ternary_group)];
    #[cfg(target_arch = "x86_64")]
    v.extend(ternary_x86::available());
    v
}

/// Every packed-group kernel this CPU can run, by name (the dispatched one
/// is among them): tests and benches compare them all with the reference.
#[must_use]
pub fn kernel_variants() -> Vec<(&'static str, GroupKernel)> {
    let mut v: Vec<(&'static str, GroupKernel)> = vec![("scalar", crate::reference_kernels().packed_group)];
    #[cfg(target_arch = "x86_64")]
    v.extend(x86::available());
    v
}

/// One source row unpacked: codes, and scale/min per sub-block; for
/// super-block layouts also their factors (`d`, `dmin` per super-block,
/// integer scale and minimum per sub-block).
#[derive(Default)]
struct Unpacked {
    codes: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
    super_d: Vec<(f32, f32)>,
    sub_q: Vec<(i8, i8)>,
}

impl PackedMatrix {
    /// Repacks `rows` rows of `cols` elements of `ty` from ggml encoding.
    /// Returns `None` when `ty` has no packed layout.
    ///
    /// # Panics
    /// When `data` is shorter than `rows` encoded rows (sizes are validated at load).
    #[must_use]
    pub fn pack(pool: &ThreadPool, ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let layout = Layout::for_type(ty)?;
        let row_bytes = ty.row_bytes(cols)?;
        assert!(data.len() >= rows * row_bytes, "matrix data too short");
        if !cols.is_multiple_of(BLOCK) {
            return None;
        }
        // Every array is group-major, so row ranges of whole groups pack
        // independently and concatenate: packing runs on the pool (a 4 GB
        // model packs in seconds rather than tens of seconds).
        let groups = rows.div_ceil(GROUP);
        let chunks = (pool.threads() * 4).min(groups).max(1);
        let per_chunk = groups.div_ceil(chunks) * GROUP;
        let parts: Vec<std::sync::Mutex<Option<Self>>> =
            (0..rows.div_ceil(per_chunk)).map(|_| std::sync::Mutex::new(None)).collect();
        pool.run(parts.len(), &|c| {
            let (r0, r1) = (c * per_chunk, ((c + 1) * per_chunk).min(rows));
            let part = Self::pack_rows(ty, layout, &data[r0 * row_bytes..r1 * row_bytes], row_bytes, r1 - r0, cols);
            *parts[c].lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(part);
        });
        let mut parts =
            parts.into_iter().filter_map(|p| p.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut m = parts.next()?;
        for part in parts {
            m.codes.extend_from_slice(&part.codes);
            m.scales.append(&part.scales);
            m.mins.append(&part.mins);
            m.rows += part.rows;
        }
        Some(m)
    }

    /// [`PackedMatrix::pack`] of one row range, on the calling thread.
    fn pack_rows(ty: GgmlType, layout: Layout, data: &[u8], row_bytes: usize, rows: usize, cols: usize) -> Self {
        let groups = rows.div_ceil(GROUP);
        let (blocks, subs) = (cols / BLOCK, cols / layout.sub);
        let mut m = Self {
            ty,
            rows,
            cols,
            layout,
            codes: vec![0; groups * blocks * layout.block_bytes()],
            scales: Scales::for_layout(&layout, groups * subs * GROUP, false),
            mins: Scales::for_layout(&layout, if layout.has_min { groups * subs * GROUP } else { 0 }, true),
            row_by_row: false,
        };
        for r in 0..rows {
            let u = unpack_row(ty, &data[r * row_bytes..(r + 1) * row_bytes], cols);
            m.store_row(r, &u);
        }
        // Padding rows get code = offset and scale 0, so they contribute exact
        // zeros (with offset 0, the zero-filled buffers already do).
        // (Grid codes are indices: their padding rows' zero scale is enough.)
        if layout.offset != 0 && layout.grid.is_none() {
            for r in rows..groups * GROUP {
                m.store_row(
                    r,
                    &Unpacked {
                        codes: vec![layout.offset as u8; cols],
                        scales: vec![0.0; subs],
                        ..Unpacked::default()
                    },
                );
            }
        }
        m
    }

    fn store_row(&mut self, r: usize, u: &Unpacked) {
        let l = self.layout;
        for (b, block) in u.codes.chunks_exact(BLOCK).enumerate() {
            let (base, _) = self.code_slot(r, b * BLOCK);
            for (e, &code) in block.iter().enumerate() {
                let (i, shift) = Self::slot_in_block(l, e);
                // Sub-byte layouts share bytes between codes: OR into the zeroed buffer.
                let low = l.low_bits();
                self.codes[base + i] |= (code & Self::low_mask(l)) << shift;
                for plane in 0..l.planes {
                    let at = base + l.low_bytes() + plane * GROUP * 4 + e % 4;
                    self.codes[at] |= ((code >> (low + plane)) & 1) << (e / 4);
                }
            }
        }
        if l.super_scales {
            // Padding rows have no factors: their zero-filled d keeps them zero.
            for (s, &(sc, m)) in u.sub_q.iter().enumerate() {
                let i = self.scale_index(r, s);
                let (d, dmin) = u.super_d[s * l.sub / SUPER];
                self.scales.set_factors(i, d, sc);
                if l.has_min {
                    self.mins.set_factors(i, dmin, m);
                }
            }
            return;
        }
        for (s, &scale) in u.scales.iter().enumerate() {
            let i = self.scale_index(r, s);
            self.scales.set(i, scale);
            if l.has_min {
                self.mins.set(i, u.mins[s]);
            }
        }
    }

    /// Where the code of element `(r, c)` lives: byte index in `codes` and
    /// the bit shift inside it (0 for bytes and low nibbles, 4 for high).
    fn code_slot(&self, r: usize, c: usize) -> (usize, u32) {
        let l = self.layout;
        let (g, lane, b, e) = (r / GROUP, r % GROUP, c / BLOCK, c % BLOCK);
        let base = (g * (self.cols / BLOCK) + b) * l.block_bytes() + lane * 4;
        let (i, shift) = Self::slot_in_block(l, e);
        (base + i, shift)
    }

    /// The mask of a code's low bits.
    fn low_mask(l: Layout) -> u8 {
        ((1u16 << l.low_bits()) - 1) as u8
    }

    /// Offset of element `e` of a block from its lane's first byte, and its
    /// shift. Code vector `k` of a block holds elements `4k..4k+4` of each
    /// row; sub-byte layouts put vectors `k`, `k + 4` (nibbles) or `k`,
    /// `k + 2`, `k + 4`, `k + 6` (2 bits) in the same bytes, low bits first.
    /// Bit planes follow the low bits (`Layout::low_bytes`), 32 bytes each,
    /// four bytes per row at `lane · 4` as for the low bits: byte `j` of plane
    /// `p` holds bit `low_bits + p` of element `4k + j` in bit `k`, the same
    /// byte position as in code vector `k`, so one shift puts it in place.
    fn slot_in_block(l: Layout, e: usize) -> (usize, u32) {
        let (run, j) = (e / 4, e % 4);
        match l.low_bits() {
            8 => (run * 32 + j, 0),
            4 => ((run % 4) * 32 + j, if run < 4 { 0 } else { 4 }),
            _ => ((run % 2) * 32 + j, 2 * (run / 2) as u32),
        }
    }

    /// Code of element `(r, c)`.
    #[must_use]
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let (i, shift) = self.code_slot(r, c);
        let byte = self.codes[i] >> shift;
        let l = self.layout;
        if l.eight_bit {
            byte
        } else if l.planes > 0 {
            // The row's plane bytes sit low_bytes after its first low-bits byte.
            let (base, _) = self.code_slot(r, c - c % BLOCK);
            let e = c % BLOCK;
            let mut code = byte & Self::low_mask(l);
            for plane in 0..l.planes {
                let bit = (self.codes[base + l.low_bytes() + plane * GROUP * 4 + e % 4] >> (e / 4)) & 1;
                code |= bit << (l.low_bits() + plane);
            }
            code
        } else if l.two_bit {
            byte & 3
        } else if let Some(grid) = l.grid {
            (i16::from(grid[usize::from(byte & 0xF)]) + 128) as u8
        } else {
            byte & 0xF
        }
    }

    /// Index into `scales`/`mins` of row `r`'s sub-block `s`.
    #[must_use]
    pub fn scale_index(&self, r: usize, s: usize) -> usize {
        ((r / GROUP) * (self.cols / self.layout.sub) + s) * GROUP + r % GROUP
    }

    /// Row `r` in f32 (equals ggml's dequantization of the source row).
    #[must_use]
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let l = self.layout;
        (0..self.cols)
            .map(|c| {
                let i = self.scale_index(r, c / l.sub);
                let v = self.scales.get(i) * (i32::from(self.code(r, c)) - l.offset) as f32;
                if l.has_min {
                    v + self.mins.get(i)
                } else {
                    v
                }
            })
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
        self.codes.len() + self.scales.bytes() + self.mins.bytes()
    }
}

/// Codes, scales and mins of one encoded row.
fn unpack_row(ty: GgmlType, row: &[u8], cols: usize) -> Unpacked {
    use GgmlType as T;
    let mut u = Unpacked { codes: Vec::with_capacity(cols), ..Unpacked::default() };
    for b in row.chunks_exact(ty.type_size()) {
        match ty {
            // IQ4_NL's nibbles are indices (into `IQ4_VALUES`), kept as such.
            T::Q4_0 | T::IQ4_NL => {
                u.scales.push(f16_at(b, 0));
                nibbles(&b[2..18], &mut u.codes);
            }
            T::Q4_1 => {
                u.scales.push(f16_at(b, 0));
                u.mins.push(f16_at(b, 2));
                nibbles(&b[4..20], &mut u.codes);
            }
            T::Q5_0 => {
                u.scales.push(f16_at(b, 0));
                five_bit(&b[2..6], &b[6..22], &mut u.codes);
            }
            T::Q5_1 => {
                u.scales.push(f16_at(b, 0));
                u.mins.push(f16_at(b, 2));
                five_bit(&b[4..8], &b[8..24], &mut u.codes);
            }
            T::Q8_0 => {
                u.scales.push(f16_at(b, 0));
                u.codes.extend(b[2..34].iter().map(|&q| (q as i8 as i16 + 128) as u8));
            }
            T::Q2_K => unpack_q2_k(b, &mut u),
            T::Q3_K => unpack_q3_k(b, &mut u),
            T::Q4_K => unpack_q4_5_k(b, None, &mut u),
            T::Q5_K => unpack_q4_5_k(&[&b[..16], &b[48..176]].concat(), Some(&b[16..48]), &mut u),
            T::Q6_K => unpack_q6_k(b, &mut u),
            T::MXFP4 => {
                u.scales.push(e8m0_to_f32_half(b[0]));
                nibbles(&b[1..17], &mut u.codes);
            }
            T::IQ4_XS => {
                u.super_d.push((f16_at(b, 0), 0.0));
                for ib in 0..8 {
                    // 6-bit scale less 32: exact as i8.
                    u.sub_q.push(((iq4_xs_scale(b, ib) - 32) as i8, 0));
                    nibbles(&b[8 + 16 * ib..24 + 16 * ib], &mut u.codes);
                }
            }
            _ => unreachable!("Layout::for_type admits only the types above"),
        }
    }
    u
}

/// 16 bytes of nibbles: elements 0..16 in the low nibbles, 16..32 in the high.
fn nibbles(qs: &[u8], out: &mut Vec<u8>) {
    out.extend(qs.iter().map(|q| q & 0xF));
    out.extend(qs.iter().map(|q| q >> 4));
}

fn five_bit(qh: &[u8], qs: &[u8], out: &mut Vec<u8>) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let start = out.len();
    nibbles(qs, out);
    for (e, c) in out[start..].iter_mut().enumerate() {
        *c |= (((qh >> e) & 1) << 4) as u8;
    }
}

fn unpack_q2_k(b: &[u8], u: &mut Unpacked) {
    let scales = &b[0..16];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    u.super_d.push((d, dmin));
    // 4-bit factors: exact as i8.
    u.sub_q.extend(scales.iter().map(|&sc| ((sc & 0xF) as i8, (sc >> 4) as i8)));
    for half in 0..2 {
        let q = &b[16 + 32 * half..48 + 32 * half];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                u.codes.extend((0..16).map(|l| (q[l + 16 * part] >> shift) & 3));
            }
        }
    }
}

fn unpack_q3_k(b: &[u8], u: &mut Unpacked) {
    let hmask = &b[0..32];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    u.super_d.push((d, 0.0));
    u.sub_q.extend(scales.iter().map(|&s| (s, 0)));
    let mut m = 1u8;
    for half in 0..2 {
        let q = &b[32 + 32 * half..64 + 32 * half];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                // value = low − (high bit clear ? 4 : 0) = code − 4 with code = low + (set ? 4 : 0).
                u.codes.extend((0..16).map(|l| {
                    let idx = l + 16 * part;
                    ((q[idx] >> shift) & 3) + if hmask[idx] & m != 0 { 4 } else { 0 }
                }));
            }
            m <<= 1;
        }
    }
}

/// Q4_K, and Q5_K with its high bits (`b` is then the Q5_K block without `qh`).
fn unpack_q4_5_k(b: &[u8], qh: Option<&[u8]>, u: &mut Unpacked) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    u.super_d.push((d, dmin));
    for chunk in 0..4 {
        let q = &b[16 + 32 * chunk..48 + 32 * chunk];
        for (k, shift) in [(0, 0u32), (1, 4)] {
            let (s, m) = scale_min_k4(2 * chunk + k, scales);
            // 6-bit factors: exact as i8.
            u.sub_q.push((s as i8, m as i8));
            let bit = 1u8 << (2 * chunk + k);
            u.codes.extend((0..32).map(|l| {
                let high = qh.map_or(0, |h| if h[l] & bit != 0 { 16 } else { 0 });
                ((q[l] >> shift) & 0xF) + high
            }));
        }
    }
}

fn unpack_q6_k(b: &[u8], u: &mut Unpacked) {
    let d = f16_at(b, 208);
    u.super_d.push((d, 0.0));
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..160 + 32 * half];
        let sc = &b[192 + 8 * half..200 + 8 * half];
        let mut vals = [0u8; 128];
        for l in 0..32 {
            let q = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, v) in q.into_iter().enumerate() {
                vals[l + 32 * k] = v;
            }
        }
        u.codes.extend_from_slice(&vals);
        u.sub_q.extend(sc.iter().map(|&s| (s as i8, 0)));
    }
}
