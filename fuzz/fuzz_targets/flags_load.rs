//! The flag-set loader and rule compiler, as a mounted ConfigMap file
//! reaches them: arbitrary bytes as JSON or YAML (by the file's name).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = if data.first().is_some_and(|b| b & 1 == 1) {
        "flags.yaml"
    } else {
        "flags.json"
    };
    let _ = switchyard::flags::store::build(&[(name.to_owned(), data.to_vec())]);
});
