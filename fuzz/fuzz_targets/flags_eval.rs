//! Rule evaluation with arbitrary contexts: the input is a flag file and an
//! evaluation context (JSON) separated by a NUL byte; every flag of a set
//! that loads is evaluated for the context, with v2 bucketing, or v3 when
//! the input ends with a NUL byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::flags::store::build;
use switchyard::flags::{Context, FractionalVersion};

fuzz_target!(|data: &[u8]| {
    let version = if data.last() == Some(&0) {
        FractionalVersion::V3
    } else {
        FractionalVersion::V2
    };
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    let mut parts = data.splitn(2, |b| *b == 0);
    let (flags, context) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let Ok(set) = build(&[("flags.json".to_owned(), flags.to_vec())], version) else {
        return;
    };
    let Ok(value) = serde_json::from_slice(context) else {
        return;
    };
    let Ok(context) = Context::from_json(value) else {
        return;
    };
    for key in set.keys() {
        let _ = set.evaluate(key, &context);
    }
});
