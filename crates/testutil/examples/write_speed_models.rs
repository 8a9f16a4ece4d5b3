//! Writes the random full-size models used for speed figures into the model
//! cache (`$HEARTH_MODELS`, else `~/.cache/hearth/models`), one file per
//! model and weight type. Existing files are kept.
//!
//! Usage: `cargo run --release -p hearth-testutil --example write_speed_models [MODEL-TYPE...]`
//! with MODEL-TYPE among `bitnet-2b-{tq1_0,tq2_0,i2_s,q4_0}` (BitNet b1.58
//! 2B-4T's shape) and `olmoe-like-{q4_k,q4_0}` (OLMoE-1B-7B's shape,
//! 64 experts, 8 active), `llama32-1b-like-TYPE` (Llama 3.2 1B's shape, every
//! matrix in TYPE: q4_0, q8_0, q2_k … q6_k, iq4_nl, iq4_xs, mxfp4).
//! `gpt-oss-20b-like-4l` (gpt-oss-20b's shape with 4 of its 24 layers).
//! Default: the four BitNet files and `olmoe-like-q4_k`.
use hearth_core::GgmlType;

fn main() -> std::io::Result<()> {
    let dir = std::env::var_os("HEARTH_MODELS").map_or_else(
        || {
            let base = std::env::var_os("XDG_CACHE_HOME").map_or_else(
                || std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
                std::path::PathBuf::from,
            );
            base.join("hearth/models")
        },
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    let mut wanted: Vec<String> = std::env::args().skip(1).collect();
    if wanted.is_empty() {
        wanted = ["bitnet-2b-tq1_0", "bitnet-2b-tq2_0", "bitnet-2b-i2_s", "bitnet-2b-q4_0", "olmoe-like-q4_k"]
            .map(String::from)
            .to_vec();
    }
    for name in wanted {
        let make: Box<dyn Fn() -> Vec<u8>> = match name.as_str() {
            "bitnet-2b-tq1_0" => Box::new(|| hearth_testutil::bitnet_2b(GgmlType::TQ1_0, 2560)),
            "bitnet-2b-tq2_0" => Box::new(|| hearth_testutil::bitnet_2b(GgmlType::TQ2_0, 2560)),
            "bitnet-2b-i2_s" => Box::new(|| hearth_testutil::bitnet_2b(GgmlType::I2_S, 2560)),
            "bitnet-2b-q4_0" => Box::new(|| hearth_testutil::bitnet_2b(GgmlType::Q4_0, 2560)),
            "olmoe-like-q4_k" => Box::new(|| hearth_testutil::olmoe_like(GgmlType::Q4_K, 7)),
            "olmoe-like-q4_0" => Box::new(|| hearth_testutil::olmoe_like(GgmlType::Q4_0, 7)),
            "gpt-oss-20b-like-4l" => Box::new(|| hearth_testutil::gpt_oss_20b_like(4, 7)),
            other if other.starts_with("llama32-1b-like-") => {
                let ty_name = other.trim_start_matches("llama32-1b-like-").to_uppercase();
                let ty = (0..64u32)
                    .filter_map(|id| GgmlType::try_from(id).ok())
                    .find(|t| t.name() == ty_name)
                    .ok_or_else(|| std::io::Error::other(format!("unknown type {ty_name}")))?;
                Box::new(move || hearth_testutil::llama_like(hearth_testutil::LLAMA32_1B, ty, 7))
            }
            other => return Err(std::io::Error::other(format!("unknown model {other} (see --help in the source)"))),
        };
        let path = dir.join(format!("{name}.gguf"));
        if path.exists() {
            eprintln!("{} exists", path.display());
            continue;
        }
        let t0 = std::time::Instant::now();
        let bytes = make();
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)?;
        eprintln!("wrote {} ({:.0} MB, {:.1} s)", path.display(), bytes.len() as f64 / 1e6, t0.elapsed().as_secs_f64());
    }
    Ok(())
}
