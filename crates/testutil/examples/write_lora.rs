//! Writes the LoRA adapters the tests use on the real SmolLM2 base, for
//! recording llama.cpp's outputs with them once:
//! `cargo run --release -p hearth-testutil --example write_lora -- OUT_DIR [NAME:SEED:RANK:ALPHA:STRENGTH]...`
//! (no specs: the tests' own, `TEST_ADAPTERS`).

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&dir)?;
    let base = hearth_testutil::real_model("smollm2");
    let mut specs: Vec<(String, u64, usize, f32, f32)> = args
        .map(|a| {
            let f: Vec<&str> = a.split(':').collect();
            let usage = || format!("NAME:SEED:RANK:ALPHA:STRENGTH, not {a}");
            assert!(f.len() == 5, "{}", usage());
            let num = |i: usize| -> f64 { f[i].parse().unwrap_or_else(|_| panic!("{}", usage())) };
            (f[0].to_owned(), num(1) as u64, num(2) as usize, num(3) as f32, num(4) as f32)
        })
        .collect();
    if specs.is_empty() {
        specs = hearth_testutil::TEST_ADAPTERS
            .iter()
            .map(|&(n, s, r, a)| (n.to_owned(), s, r, a, hearth_testutil::TEST_ADAPTER_STRENGTH))
            .collect();
    }
    for (name, seed, rank, alpha, strength) in specs {
        let bytes = hearth_testutil::lora_adapter(&base, seed, rank, alpha, strength, &hearth_testutil::LORA_TARGETS);
        std::fs::write(dir.join(format!("{name}.gguf")), bytes)?;
    }
    println!("{}", dir.display());
    Ok(())
}
