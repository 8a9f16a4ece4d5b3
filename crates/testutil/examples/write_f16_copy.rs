//! Writes an F16 (or BF16) copy of a GGUF model: every quantized or F32
//! matrix widened and stored as 16-bit floats, vectors kept as they are —
//! for measuring float-weight memory and speed on a real shape:
//! `cargo run --release -p hearth-testutil --example write_f16_copy -- IN OUT [bf16]`.

use hearth_core::GgmlType;
use hearth_gguf::{GgufFile, GgufWriter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: write_f16_copy IN OUT [bf16]".into());
    };
    let bf16 = args.next().as_deref() == Some("bf16");
    let file = GgufFile::open(&input)?;
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata() {
        if key != "general.file_type" {
            w.set(key, value.clone());
        }
    }
    for t in file.tensors() {
        let data = file.tensor_data(t);
        if t.dims.len() < 2 {
            w.add_tensor(&t.name, &t.dims, t.ty, data.to_vec());
            continue;
        }
        let cols = t.dims[0] as usize;
        let row_bytes = t.ty.row_bytes(cols).ok_or("unknown row size")?;
        let mut row = vec![0f32; cols];
        let mut out = Vec::with_capacity(data.len() / row_bytes * cols * 2);
        for src in data.chunks_exact(row_bytes) {
            hearth_cpu::kernels::reference::dequantize_row(t.ty, src, &mut row).map_err(|e| format!("{}: type {:?} not readable", t.name, e.0))?;
            for &v in &row {
                let bits = if bf16 { half::bf16::from_f32(v).to_bits() } else { half::f16::from_f32(v).to_bits() };
                out.extend_from_slice(&bits.to_le_bytes());
            }
        }
        w.add_tensor(&t.name, &t.dims, if bf16 { GgmlType::BF16 } else { GgmlType::F16 }, out);
    }
    w.write_to(std::path::Path::new(&output))?;
    println!("{output}");
    Ok(())
}
