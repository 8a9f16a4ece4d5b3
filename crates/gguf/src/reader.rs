//! Parsing a GGUF file into metadata and tensor descriptors.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hearth_core::GgmlType;

use crate::{GgufError, MetaValue, MetaValueType, DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// Arrays inside arrays deeper than this are refused (real files use depth 1).
const MAX_ARRAY_NESTING: usize = 4;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;

/// Where one tensor lives in the file and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the innermost (contiguous) one.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    /// Size in bytes of the tensor data (checked against the file size).
    pub size: usize,
}

impl TensorInfo {
    /// Number of elements.
    #[must_use]
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The bytes behind a parsed file: a memory map or an owned buffer.
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Cheap to clone; tensor data is borrowed from the map.
#[derive(Clone)]
pub struct GgufFile {
    storage: Arc<Storage>,
    /// GGUF format version (2 or 3).
    pub version: u32,
    metadata: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let file = std::fs::File::open(path.as_ref())?;
        // SAFETY: the map is read-only and private to this process. Hearth never
        // writes model files it has open; a file truncated underneath us by
        // another process is outside what any mmap-based loader can defend
        // against (llama.cpp has the same contract).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Self::parse(Storage::Mapped(map))
    }

    /// Parses a GGUF image held in memory (tests, fuzzing, generated models).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<Self, GgufError> {
        let bytes = storage.bytes();
        let mut r = Cursor { bytes, pos: 0 };
        let magic = r.u32("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // A key-value pair needs at least 12 bytes, a tensor info at least 24.
        let n_kv = r.bounded_count("metadata", n_kv, 12)?;
        let n_tensors = r.bounded_count("tensor", n_tensors, 24)?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut index = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let type_id = r.u32("metadata value type")?;
            let value = r.value(&key, type_id, 0)?;
            index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT as u64,
            Some(v) => v.as_u64().unwrap_or(0),
        };
        if alignment == 0 || !alignment.is_power_of_two() || alignment > 65536 {
            return Err(GgufError::BadAlignment(alignment));
        }
        let alignment = alignment as usize;

        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            infos.push(r.tensor_header()?);
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let data_len = bytes.len().saturating_sub(data_start);

        let mut tensors = Vec::with_capacity(infos.len());
        let mut tensor_index = HashMap::with_capacity(infos.len());
        for (name, dims, type_id, offset) in infos {
            let info = validate_tensor(name, dims, type_id, offset, alignment, data_len)?;
            if tensor_index.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(info.name));
            }
            tensors.push(info);
        }
        Ok(Self { storage: Arc::new(storage), version, metadata, index, tensors, tensor_index, data_start })
    }

    /// All metadata pairs in file order.
    #[must_use]
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The value under `key`, if present.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A required string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, v, "string"))
    }

    /// A required non-negative integer value of any width.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| wrong_type(key, v, "unsigned integer"))
    }

    /// A required numeric value as f64.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| wrong_type(key, v, "number"))
    }

    /// A required array value.
    pub fn get_array(&self, key: &str) -> Result<&[MetaValue], GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong_type(key, v, "array"))
    }

    fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })
    }

    /// All tensor descriptors in file order.
    #[must_use]
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Bytes of all tensor data (the weights as stored).
    #[must_use]
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size as u64).sum()
    }

    /// Tells the OS that the mapped pages read so far are not needed now
    /// (after the weights were repacked into their own memory). They stay
    /// valid: a later read faults them back in from the file. Keeps resident
    /// memory to what the backend holds plus what is actually read again
    /// (embedding rows), which is what `hearth plan` counts.
    pub fn release_pages(&self) {
        if let Storage::Mapped(m) = self.storage.as_ref() {
            // SAFETY: the mapping is read-only and file-backed; MADV_DONTNEED
            // only drops pages, and later reads see the file's bytes again.
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// [`GgufFile::release_pages`] for the bytes of tensor `info` alone
    /// (whole pages inside it): a loader that has copied a tensor into its
    /// own form drops the file's copy at once, so a load's peak is the
    /// model's own memory plus one tensor, not plus the whole file.
    pub fn release_tensor_pages(&self, info: &TensorInfo) {
        if let Storage::Mapped(m) = self.storage.as_ref() {
            const PAGE: usize = 4096;
            let start = (self.data_start() + info.offset as usize).next_multiple_of(PAGE);
            let end = (self.data_start() + info.offset as usize + info.size) / PAGE * PAGE;
            if end > start {
                // SAFETY: as in `release_pages`; the range lies inside the mapping.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }

    /// The descriptor of tensor `name`, if present.
    #[must_use]
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Zero-copy view of a tensor's bytes. Always in bounds: checked at parse time.
    #[must_use]
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_start + info.offset as usize;
        &self.storage.bytes()[start..start + info.size]
    }

    /// The whole file image (used by backends that keep the map alive).
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Offset of the data section in the file.
    #[must_use]
    pub fn data_start(&self) -> usize {
        self.data_start
    }
}

fn wrong_type(key: &str, v: &MetaValue, expected: &'static str) -> GgufError {
    GgufError::WrongType { key: key.to_owned(), found: v.type_name(), expected }
}

fn validate_tensor(
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
    alignment: usize,
    data_len: usize,
) -> Result<TensorInfo, GgufError> {
    let bad = |problem: String| GgufError::BadTensor { name: name.clone(), problem };
    let ty = GgmlType::try_from(type_id).map_err(|source| GgufError::UnknownType { name: name.clone(), source })?;
    if dims.contains(&0) {
        return Err(bad(format!("has a zero dimension {dims:?}")));
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let row = usize::try_from(dims[0]).map_err(|_| bad("row too long".into()))?;
    if ty.row_bytes(row).is_none() {
        return Err(bad(format!("row of {row} elements is not a whole number of {ty} blocks")));
    }
    let rows = n_elements / dims[0];
    let size = ty
        .tensor_bytes(row, rows)
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| bad(format!("size of {dims:?} {ty} overflows")))?;
    if !offset.is_multiple_of(alignment as u64) {
        return Err(bad(format!("offset {offset} is not aligned to {alignment}")));
    }
    let end = offset.checked_add(size as u64);
    if end.is_none_or(|e| e > data_len as u64) {
        return Err(bad(format!("data [{offset}, +{size}) runs past the end of the data section ({data_len} bytes)")));
    }
    Ok(TensorInfo { name, dims, ty, offset, size })
}

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let remaining = self.bytes.len() - self.pos;
        if n > remaining {
            return Err(GgufError::Truncated {
                what: what.to_owned(),
                offset: self.pos,
                needed: n,
                len: self.bytes.len(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Checks that `count` items of at least `min_size` bytes each could fit
    /// in what is left of the file, so a hostile count cannot size an allocation.
    fn bounded_count(&self, what: &'static str, count: u64, min_size: usize) -> Result<usize, GgufError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        match count.checked_mul(min_size as u64) {
            Some(need) if need <= remaining => Ok(count as usize),
            _ => Err(GgufError::AbsurdCount { what, count, len: self.bytes.len() }),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let offset = self.pos;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw).map(str::to_owned).map_err(|_| GgufError::BadUtf8 { offset })
    }

    fn value(&mut self, key: &str, type_id: u32, depth: usize) -> Result<MetaValue, GgufError> {
        let ty =
            MetaValueType::from_id(type_id).ok_or_else(|| GgufError::BadValueType { key: key.to_owned(), type_id })?;
        Ok(match ty {
            MetaValueType::U8 => MetaValue::U8(self.array::<1>(key)?[0]),
            MetaValueType::I8 => MetaValue::I8(self.array::<1>(key)?[0] as i8),
            MetaValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            MetaValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            MetaValueType::U32 => MetaValue::U32(self.u32(key)?),
            MetaValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            MetaValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            MetaValueType::Bool => MetaValue::Bool(self.array::<1>(key)?[0] != 0),
            MetaValueType::String => MetaValue::String(self.string(key)?),
            MetaValueType::U64 => MetaValue::U64(self.u64(key)?),
            MetaValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            MetaValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            MetaValueType::Array => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(GgufError::NestingTooDeep { key: key.to_owned(), max: MAX_ARRAY_NESTING });
                }
                let elem_id = self.u32(key)?;
                let elem = MetaValueType::from_id(elem_id)
                    .ok_or_else(|| GgufError::BadValueType { key: key.to_owned(), type_id: elem_id })?;
                let count = self.u64(key)?;
                let count = self.bounded_count("array element", count, elem.min_encoded_size())?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(key, elem_id, depth + 1)?);
                }
                MetaValue::Array(elem, items)
            }
        })
    }

    fn tensor_header(&mut self) -> Result<(String, Vec<u64>, u32, u64), GgufError> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadTensor { name, problem: format!("has {n_dims} dimensions (1..=4 allowed)") });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let type_id = self.u32("tensor type")?;
        let offset = self.u64("tensor offset")?;
        Ok((name, dims, type_id, offset))
    }
}
