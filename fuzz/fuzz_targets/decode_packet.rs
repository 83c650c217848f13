//! Frame and descriptor reassembly: any packet with any descriptors decodes or fails cleanly.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = crossproc::fuzzing::decode_packet(input);
});
