//! A corpus of broken GGUF files, generated here: each must yield a typed
//! error (never a panic), and random corruption of a valid file must never panic.

use hearth_core::GgmlType;
use hearth_gguf::{GgufError, GgufFile, GgufWriter, MetaValue, MetaValueType};
use rand::{Rng, SeedableRng};

fn valid_image() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("llama".into()));
    w.set("llama.block_count", MetaValue::U32(1));
    w.set(
        "tokenizer.ggml.tokens",
        MetaValue::Array(MetaValueType::String, vec![MetaValue::String("a".into()), MetaValue::String("b".into())]),
    );
    w.add_tensor("w", &[32, 2], GgmlType::F32, vec![0u8; 32 * 2 * 4]);
    w.add_tensor("q", &[32, 1], GgmlType::Q8_0, vec![0u8; 34]);
    w.to_bytes()
}

#[test]
fn valid_file_round_trips() {
    let f = GgufFile::from_bytes(valid_image()).expect("valid");
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 1);
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 2);
    let t = f.tensor("q").unwrap();
    assert_eq!(t.ty, GgmlType::Q8_0);
    assert_eq!(f.tensor_data(t).len(), 34);
}

#[test]
fn bad_magic_is_named() {
    let mut img = valid_image();
    img[0] = b'X';
    assert!(matches!(GgufFile::from_bytes(img), Err(GgufError::BadMagic { .. })));
}

#[test]
fn unsupported_version_is_named() {
    let mut img = valid_image();
    img[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(GgufFile::from_bytes(img), Err(GgufError::UnsupportedVersion(1))));
}

#[test]
fn absurd_counts_do_not_allocate() {
    let mut img = valid_image();
    img[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(GgufFile::from_bytes(img.clone()), Err(GgufError::AbsurdCount { .. })));
    let mut img = valid_image();
    img[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(GgufFile::from_bytes(img), Err(GgufError::AbsurdCount { .. })));
}

#[test]
fn every_truncation_is_an_error() {
    let img = valid_image();
    for len in 0..img.len() - 1 {
        let r = GgufFile::from_bytes(img[..len].to_vec());
        // Cutting only trailing padding of the last tensor can still be valid;
        // anything shorter than the header must fail.
        if len < 200 {
            assert!(r.is_err(), "truncation at {len} was accepted");
        }
    }
}

/// Finds the byte offset of a tensor's header fields by re-encoding its name.
fn tensor_header_offset(img: &[u8], name: &str) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(name.as_bytes());
    img.windows(pat.len()).position(|w| w == pat.as_slice()).unwrap() + pat.len()
}

#[test]
fn unknown_tensor_type_is_named() {
    let mut img = valid_image();
    let at = tensor_header_offset(&img, "w") + 4 + 16; // n_dims + 2 dims
    img[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = GgufFile::from_bytes(img).unwrap_err();
    assert!(matches!(e, GgufError::UnknownType { .. }), "{e}");
    assert!(e.to_string().contains("\"w\""));
}

#[test]
fn offset_past_end_is_named() {
    let mut img = valid_image();
    let at = tensor_header_offset(&img, "q") + 4 + 16 + 4;
    img[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let e = GgufFile::from_bytes(img).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
}

#[test]
fn overflowing_dims_are_named() {
    let mut img = valid_image();
    let at = tensor_header_offset(&img, "w") + 4;
    img[at + 8..at + 16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let e = GgufFile::from_bytes(img).unwrap_err();
    assert!(matches!(e, GgufError::BadTensor { .. }), "{e}");
}

#[test]
fn too_many_dims_are_named() {
    let mut img = valid_image();
    let at = tensor_header_offset(&img, "w");
    img[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(matches!(GgufFile::from_bytes(img), Err(GgufError::BadTensor { .. })));
}

#[test]
fn random_corruption_never_panics() {
    let base = valid_image();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let mut img = base.clone();
        for _ in 0..rng.gen_range(1..8) {
            let i = rng.gen_range(0..img.len());
            img[i] = rng.gen();
        }
        if rng.gen_bool(0.3) {
            img.truncate(rng.gen_range(0..img.len()));
        }
        let _ = GgufFile::from_bytes(img);
    }
}
