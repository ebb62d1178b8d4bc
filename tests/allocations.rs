//! Evaluating a static flag, or a fractional split, allocates nothing on the
//! heap (counted by dhat's allocator, which this binary installs).

use serde_json::json;
use switchyard::flags::{Context, FlagSet};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn static_and_fractional_evaluations_do_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let flags = json!({"flags": {
        "static": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a"},
        "fractional": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"fractional": [["a", 20], ["b", 80]]}}
    }});
    let set = FlagSet::parse("alloc.json", &flags.to_string()).expect("valid");
    let ctx = Context::new(Some("user-1"), Default::default());
    for key in ["static", "fractional"] {
        let before = dhat::HeapStats::get().total_blocks;
        let mut variants = 0;
        for _ in 0..1000 {
            if set.string(key, &ctx, "z").variant.is_some() {
                variants += 1;
            }
        }
        let after = dhat::HeapStats::get().total_blocks;
        assert_eq!(variants, 1000);
        assert_eq!(
            after - before,
            0,
            "{key}: {} allocations in 1000 evaluations",
            after - before
        );
    }
    // The harness can see an allocation: a control.
    let before = dhat::HeapStats::get().total_blocks;
    let owned = std::hint::black_box(String::from("allocates"));
    assert!(dhat::HeapStats::get().total_blocks > before, "{owned}");
}
