//! Flag evaluation speed: a static flag, a fractional split (v2 bucketing,
//! and v3: deterministic CBOR of `[flagKey, targetingKey]`) and a
//! three-clause targeting rule, each evaluated against a prebuilt context
//! (what a request does after building its context once).
//!
//! Run: `cargo bench --bench flags`. Results go in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use switchyard::flags::{Context, FlagSet, FractionalVersion};

fn flag_set() -> FlagSet {
    let flags = json!({"flags": {
        "static": {"state": "ENABLED", "variants": {"whatlang": "whatlang", "lingua": "lingua"}, "defaultVariant": "whatlang"},
        "fractional": {"state": "ENABLED", "variants": {"whatlang": "whatlang", "lingua": "lingua"}, "defaultVariant": "whatlang",
            "targeting": {"fractional": [["lingua", 20], ["whatlang", 80]]}},
        "three-clause": {"state": "ENABLED", "variants": {"whatlang": "whatlang", "lingua": "lingua"}, "defaultVariant": "whatlang",
            "targeting": {"if": [{"and": [
                {"==": [{"var": "user-group"}, "beta"]},
                {"in": [{"var": "country"}, ["de", "fr", "nl"]]},
                {"starts_with": [{"var": "client-version"}, "2."]}
            ]}, "lingua", null]}}
    }});
    FlagSet::parse("bench.json", &flags.to_string()).expect("valid")
}

fn context() -> Context {
    let mut attributes = Map::new();
    for (k, v) in [
        ("user-group", "beta"),
        ("country", "nl"),
        ("client-version", "2.4.1"),
        ("track", "stable"),
    ] {
        attributes.insert(k.into(), Value::String(v.into()));
    }
    Context::new(Some("user-1234"), attributes)
}

fn evaluation(c: &mut Criterion) {
    let set = flag_set();
    let ctx = context();
    assert_eq!(
        set.string("three-clause", &ctx, "x").value,
        "lingua",
        "the rule matches"
    );
    let v3 = set.clone().with_fractional_version(FractionalVersion::V3);
    let mut group = c.benchmark_group("flag_evaluation");
    for (name, set, key) in [
        ("static", &set, "static"),
        ("fractional", &set, "fractional"),
        ("fractional-v3", &v3, "fractional"),
        ("three-clause", &set, "three-clause"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(set.string(black_box(key), &ctx, "whatlang").value))
        });
    }
    group.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
