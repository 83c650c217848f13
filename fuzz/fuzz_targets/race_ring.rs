//! The shared-memory ring's reader while a hostile peer writes into the ring at the same time:
//! it returns from every call and never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = crossproc::fuzzing::race_ring(input);
});
