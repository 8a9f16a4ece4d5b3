//! Looking up tensors by name with shape and type checks, once, at load time.

use std::sync::Arc;

use hearth_core::{Backend, GgmlType, PreparedWeight, WeightView};
use hearth_gguf::GgufFile;

use crate::ModelError;

/// A tensor inside the mapped file: `rows × cols` in ggml encoding.
#[derive(Debug, Clone)]
pub struct TensorRef {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    offset: usize,
    len: usize,
}

impl TensorRef {
    /// Zero-copy view of the matrix in `file`.
    #[must_use]
    pub fn view<'a>(&self, file: &'a GgufFile) -> WeightView<'a> {
        let start = file.data_start() + self.offset;
        WeightView {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: &file.bytes()[start..start + self.len],
            expert: false,
            any_order: false,
        }
    }

    /// Output features.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// A weight matrix prepared by the backend for matmuls.
pub struct Matrix {
    weight: Box<dyn PreparedWeight>,
    /// Per-tensor output scale (`<name>.scale`, BitNet), applied after the matmul.
    scale: Option<f32>,
    /// The file's name for a whole 2-D matrix (`blk.0.attn_q.weight`):
    /// what LoRA adapters name the matrices they adapt.
    name: Option<Arc<str>>,
}

impl Matrix {
    /// Output features.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.weight.rows()
    }

    /// Per-tensor output scale, if the file has one.
    #[must_use]
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// The backend's form of the matrix.
    #[must_use]
    pub fn weight(&self) -> &dyn PreparedWeight {
        self.weight.as_ref()
    }

    /// The tensor's name in the file, for a whole 2-D matrix.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Bytes one pass over the matrix reads.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.weight.bytes()
    }
}

/// Loads tensors from one file for one backend.
pub struct WeightLoader<'a> {
    file: &'a GgufFile,
    backend: &'a dyn Backend,
    prepared_bytes: std::cell::Cell<u64>,
}

impl<'a> WeightLoader<'a> {
    /// A loader for `file` whose matrices `backend` will compute with.
    #[must_use]
    pub fn new(file: &'a GgufFile, backend: &'a dyn Backend) -> Self {
        Self { file, backend, prepared_bytes: std::cell::Cell::new(0) }
    }

    /// Bytes of all matrices prepared so far: what one decode step reads.
    #[must_use]
    pub fn prepared_bytes(&self) -> u64 {
        self.prepared_bytes.get()
    }

    /// True when the file has tensor `name`.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// A `rows × cols` matrix (ggml dims `[cols, rows]`), prepared for matmuls.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let t = self.tensor(name, rows, cols)?;
        let mut m = self.prepare(&t)?;
        m.name = Some(Arc::from(name));
        self.release(name);
        // BitNet stores one f32 scale per ternary matrix beside it (llama.cpp's `wq_s` etc.).
        if let Some(stem) = name.strip_suffix(".weight") {
            let scale_name = format!("{stem}.scale");
            if self.has(&scale_name) {
                m.scale = Some(self.vector(&scale_name, 1)?[0]);
            }
        }
        Ok(m)
    }

    /// The experts of a 3-D expert tensor (ggml dims `[cols, rows, n_expert]`,
    /// e.g. `blk.0.ffn_up_exps.weight`): one prepared `rows × cols` matrix
    /// per expert, each a slice of the file, so a step reads only the experts
    /// it routes to. Prepared as experts ([`WeightView::expert`]: llama.cpp
    /// multiplies them by `MUL_MAT_ID`).
    pub fn experts(&self, name: &str, n_expert: usize, rows: usize, cols: usize) -> Result<Vec<Matrix>, ModelError> {
        self.slices(name, n_expert, rows, cols, true)
    }

    /// The matrices of a 3-D tensor multiplied slice by slice as an ordinary
    /// batched product (DeepSeek's per-head `attn_k_b` / `attn_v_b`).
    pub fn matrices(&self, name: &str, count: usize, rows: usize, cols: usize) -> Result<Vec<Matrix>, ModelError> {
        self.slices(name, count, rows, cols, false)
    }

    /// A fused `Σparts × cols` matrix (ggml dims `[cols, Σparts]`, e.g. Phi-3's
    /// `attn_qkv` or its gate-and-up `ffn_up`) as one prepared matrix per run
    /// of `parts[i]` consecutive rows: the rows of a ggml matrix are
    /// contiguous, and each output row is its own dot product, so the parts
    /// compute exactly what the fused product does.
    pub fn row_blocks(&self, name: &str, parts: &[usize], cols: usize) -> Result<Vec<Matrix>, ModelError> {
        let rows: usize = parts.iter().sum();
        let all = self.checked(name, vec![cols as u64, rows as u64], rows, cols)?;
        let unsupported = || ModelError::UnsupportedType { name: name.to_owned(), ty: all.ty };
        let row_bytes = all.ty.row_bytes(cols).filter(|_| all.ty.trailer_bytes() == 0).ok_or_else(unsupported)?;
        let mut offset = all.offset;
        let blocks = parts
            .iter()
            .map(|&n| {
                let t = TensorRef { rows: n, offset, len: n * row_bytes, ..all.clone() };
                offset += n * row_bytes;
                self.prepare(&t)
            })
            .collect();
        self.release(name);
        blocks
    }

    fn slices(
        &self,
        name: &str,
        count: usize,
        rows: usize,
        cols: usize,
        expert: bool,
    ) -> Result<Vec<Matrix>, ModelError> {
        // Saturating: the dims check rejects absurd sizes from metadata before any use.
        let all = self.checked(name, vec![cols as u64, rows as u64, count as u64], rows.saturating_mul(count), cols)?;
        // A per-tensor trailer (I2_S) would sit after the last slice only.
        let per_slice = match all.ty.tensor_bytes(cols, rows as u64) {
            Some(b) if all.ty.trailer_bytes() == 0 && b as usize * count == all.len => b as usize,
            _ => return Err(ModelError::UnsupportedType { name: name.to_owned(), ty: all.ty }),
        };
        let slices = (0..count)
            .map(|e| {
                let t = TensorRef { rows, offset: all.offset + e * per_slice, len: per_slice, ..all.clone() };
                self.prepare_view(&WeightView { expert, ..t.view(self.file) })
            })
            .collect();
        self.release(name);
        slices
    }

    /// Drops the file's pages of tensor `name` once the backend holds its
    /// own copy (a later read, such as an embedding row, faults them back).
    fn release(&self, name: &str) {
        if let Some(info) = self.file.tensor(name) {
            self.file.release_tensor_pages(info);
        }
    }

    /// Prepares a tensor for matmuls (e.g. an embedding table used as the LM head).
    pub fn prepare(&self, t: &TensorRef) -> Result<Matrix, ModelError> {
        self.prepare_view(&t.view(self.file))
    }

    fn prepare_view(&self, view: &WeightView<'_>) -> Result<Matrix, ModelError> {
        let weight = self.backend.prepare(view)?;
        self.prepared_bytes.set(self.prepared_bytes.get() + weight.bytes() as u64);
        Ok(Matrix { weight, scale: None, name: None })
    }

    /// A `rows × cols` tensor left in the file (ggml dims `[cols, rows]`).
    pub fn tensor(&self, name: &str, rows: usize, cols: usize) -> Result<TensorRef, ModelError> {
        self.checked(name, vec![cols as u64, rows as u64], rows, cols)
    }

    /// Tensor `name`, checked to have dims `expected` and a type the backend
    /// supports, seen as `rows × cols`.
    fn checked(&self, name: &str, expected: Vec<u64>, rows: usize, cols: usize) -> Result<TensorRef, ModelError> {
        let info = self.file.tensor(name).ok_or_else(|| ModelError::MissingTensor { name: name.to_owned() })?;
        if info.dims != expected {
            return Err(ModelError::BadShape { name: name.to_owned(), found: info.dims.clone(), expected });
        }
        if !self.backend.supports(info.ty) {
            return Err(ModelError::UnsupportedType { name: name.to_owned(), ty: info.ty });
        }
        Ok(TensorRef { ty: info.ty, rows, cols, offset: info.offset as usize, len: info.size })
    }

    /// An optional matrix: `None` when absent, an error when present but wrong.
    pub fn optional_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Option<Matrix>, ModelError> {
        if self.has(name) {
            self.matrix(name, rows, cols).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A vector of `len` elements (norm weights, biases), dequantized to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let m = self.checked(name, vec![len as u64], 1, len)?;
        let mut out = vec![0.0; len];
        self.backend.get_rows(&m.view(self.file), &[0], &mut out)?;
        Ok(out)
    }

    /// A `rows × cols` tensor dequantized to f32, row-major (per-expert
    /// bias tables such as gpt-oss's `ffn_up_exps.bias`).
    pub fn table(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.tensor(name, rows, cols)?;
        let mut out = vec![0.0; rows * cols];
        let all: Vec<u32> = (0..rows).map(|r| u32::try_from(r).unwrap_or(u32::MAX)).collect();
        self.backend.get_rows(&t.view(self.file), &all, &mut out)?;
        Ok(out)
    }

    /// An optional vector.
    pub fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, ModelError> {
        if self.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}
