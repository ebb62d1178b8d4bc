//! Rule evaluation with arbitrary contexts: the input is a flag file and an
//! evaluation context (JSON) separated by a NUL byte; every flag of a set
//! that loads is evaluated for the context.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::flags::Context;
use switchyard::flags::store::build;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (flags, context) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let Ok(set) = build(&[("flags.json".to_owned(), flags.to_vec())]) else {
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
