//! Writes the tiny random cross-encoder (seed 7) into a folder, for
//! `fixtures/cross_encoder/reference.py`. Usage: `write_cross_encoder DIR`.
fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "cross_encoder".into());
    hearth_testutil::write_tiny_cross_encoder(std::path::Path::new(&dir), 7)
}
