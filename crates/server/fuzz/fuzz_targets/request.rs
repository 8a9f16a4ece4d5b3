//! Fuzz the API's request parsing and checks: any body sent to the chat or
//! text-completion endpoint must be accepted or refused with a 4xx, never
//! panic. `cargo fuzz run request` (from crates/server).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    if let Err(e) = hearth_server::check_body(first & 1 == 0, body, 49152, 4096) {
        assert!(e.status.is_client_error(), "{e:?}");
    }
});
