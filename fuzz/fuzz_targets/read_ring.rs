//! The shared-memory ring's reader: any ring contents deliver messages or fail cleanly.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = crossproc::fuzzing::read_ring(input);
});
