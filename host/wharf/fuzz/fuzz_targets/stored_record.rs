//! A record read back from a log (first byte: which kind).
//! What must hold is in `host/wharf/src/fuzzing.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = wharf::fuzzing::stored_record(data);
});
