#![no_main]
// Body and invariants: pear_server::fuzzing::framer_and_request (replayed in CI by tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pear_server::fuzzing::framer_and_request(data));
