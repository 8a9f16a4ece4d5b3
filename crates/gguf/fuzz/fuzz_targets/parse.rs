//! Fuzz the GGUF parser: any byte string must parse or fail with an error,
//! never panic, and every tensor view of a parsed file must be in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = hearth_gguf::GgufFile::from_bytes(data.to_vec()) {
        for t in file.tensors() {
            let _ = file.tensor_data(t).len();
        }
    }
});
