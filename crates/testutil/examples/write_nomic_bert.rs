//! Writes the tiny random nomic-bert GGUF (seed 11), for
//! `fixtures/nomic_bert/reference.py`. Usage: `write_nomic_bert FILE`.
fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "nomic.gguf".into());
    hearth_testutil::write_tiny_nomic_bert(std::path::Path::new(&path), 11)
}
