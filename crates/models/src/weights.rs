//! Looking up tensors by name with shape and type checks, once, at load time.

use hearth_core::{Backend, GgmlType, WeightView};
use hearth_gguf::GgufFile;

use crate::ModelError;

/// A weight matrix inside the mapped file: `rows × cols` in ggml encoding.
#[derive(Debug, Clone)]
pub struct Matrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    offset: usize,
    len: usize,
}

impl Matrix {
    /// Zero-copy view of the matrix in `file`.
    #[must_use]
    pub fn view<'a>(&self, file: &'a GgufFile) -> WeightView<'a> {
        let start = file.data_start() + self.offset;
        WeightView { ty: self.ty, rows: self.rows, cols: self.cols, data: &file.bytes()[start..start + self.len] }
    }

    /// Output features.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Loads tensors from one file for one backend.
pub struct WeightLoader<'a> {
    /// The model file.
    pub file: &'a GgufFile,
    /// The backend the weights must be computable on.
    pub backend: &'a dyn Backend,
}

impl WeightLoader<'_> {
    /// True when the file has tensor `name`.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// A `rows × cols` matrix (ggml dims `[cols, rows]`).
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let info = self.file.tensor(name).ok_or_else(|| ModelError::MissingTensor { name: name.to_owned() })?;
        let expected = vec![cols as u64, rows as u64];
        if info.dims != expected {
            return Err(ModelError::BadShape { name: name.to_owned(), found: info.dims.clone(), expected });
        }
        if !self.backend.supports(info.ty) {
            return Err(ModelError::UnsupportedType { name: name.to_owned(), ty: info.ty });
        }
        Ok(Matrix { ty: info.ty, rows, cols, offset: info.offset as usize, len: info.size })
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
        let info = self.file.tensor(name).ok_or_else(|| ModelError::MissingTensor { name: name.to_owned() })?;
        if info.dims != [len as u64] {
            return Err(ModelError::BadShape {
                name: name.to_owned(),
                found: info.dims.clone(),
                expected: vec![len as u64],
            });
        }
        if !self.backend.supports(info.ty) {
            return Err(ModelError::UnsupportedType { name: name.to_owned(), ty: info.ty });
        }
        let m = Matrix { ty: info.ty, rows: 1, cols: len, offset: info.offset as usize, len: info.size };
        let mut out = vec![0.0; len];
        self.backend.get_rows(&m.view(self.file), &[0], &mut out)?;
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
