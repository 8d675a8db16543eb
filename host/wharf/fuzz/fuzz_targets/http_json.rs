//! An HTTP API request body (first byte: which request).
//! What must hold is in `host/wharf/src/fuzzing.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = wharf::fuzzing::http_json(data);
});
