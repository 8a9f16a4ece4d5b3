//! Diagnostic: multiply a tensor of a model by an f32 vector read from a file.
//! Usage: matmul_probe MODEL TENSOR VECTOR.bin ROW_INDEX
use hearth_core::{Backend, WeightView};
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let f = hearth_gguf::GgufFile::open(hearth_engine::catalog::resolve(&a[1])?)?;
    let t = f.tensor(&a[2]).ok_or("tensor")?.clone();
    let raw = std::fs::read(&a[3])?;
    let cols = t.dims[0] as usize;
    let row: usize = a[4].parse()?;
    let x: Vec<f32> =
        raw.chunks_exact(4).skip(row * cols).take(cols).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let w = WeightView { ty: t.ty, rows: t.dims[1] as usize, cols, data: f.tensor_data(&t) };
    let mut out = vec![0.0; w.rows];
    hearth_cpu::CpuBackend::new().matmul(&w, &x, 1, &mut out)?;
    println!("{:?}", &out[..4]);
    Ok(())
}
