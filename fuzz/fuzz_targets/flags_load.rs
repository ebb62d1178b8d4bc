//! The flag-set loader and rule compiler, as a mounted ConfigMap file
//! reaches them: arbitrary bytes as a `.json` file when they start with
//! `{`, else as a `.yaml` file (the loader picks the parser by the name).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = if data.first() == Some(&b'{') {
        "flags.json"
    } else {
        "flags.yaml"
    };
    let _ = switchyard::flags::store::build(
        &[(name.to_owned(), data.to_vec())],
        switchyard::flags::FractionalVersion::V2,
    );
});
