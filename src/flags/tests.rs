//! Evaluation semantics: flagd's published vectors, every operator, reasons
//! and error codes, `$ref`, JSON and YAML.

use serde_json::{Value, json};

use super::*;

fn set(flags: Value) -> FlagSet {
    FlagSet::parse("test.json", &flags.to_string()).expect("valid flag set")
}

/// A flag whose targeting is `rule`, with string variants named after
/// themselves, evaluated for `ctx`: (variant, reason).
fn run(rule: Value, variants: &[&str], ctx: Value) -> (Option<String>, Reason) {
    let variants: serde_json::Map<String, Value> =
        variants.iter().map(|v| (v.to_string(), json!(v))).collect();
    let default = variants.keys().next().cloned().expect("a variant");
    let flags = set(json!({"flags": {"f": {
        "state": "ENABLED", "variants": variants, "defaultVariant": default, "targeting": rule
    }}}));
    let ctx = Context::from_json(ctx).expect("object");
    let r = flags.evaluate("f", &ctx);
    (r.variant.map(str::to_owned), r.reason)
}

/// Evaluates a bare JsonLogic expression against `data`.
fn logic(rule: Value, data: Value) -> Value {
    let compiled = rule::Rule::compile(&rule, &mut Vec::new()).expect("compiles");
    let env = rule::Env {
        data: &data,
        flag_key: "flag",
        timestamp: 1_700_000_000,
        fractional: FractionalVersion::V2,
    };
    compiled.evaluate(&env).expect("evaluates").into_owned()
}

#[test]
fn flagd_fractional_vectors() {
    let flags = set(json!({"flags": {"fractional-flag": {
        "state": "ENABLED",
        "variants": {"clubs": "clubs", "diamonds": "diamonds", "hearts": "hearts", "spades": "spades"},
        "defaultVariant": "clubs",
        "targeting": {"fractional": [
            {"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]},
            ["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]
        ]}
    }}}));
    for (name, expected) in [("jack", "hearts"), ("queen", "spades")] {
        let ctx = Context::from_json(json!({"user": {"name": name}})).expect("ctx");
        let r = flags.evaluate("fractional-flag", &ctx);
        assert_eq!(r.variant, Some(expected), "{name}");
        assert_eq!(r.reason, Reason::TargetingMatch);
    }
}

#[test]
fn fractional_default_key_is_flag_key_then_targeting_key() {
    // Without an explicit key, the key is "$flagd.flagKey" + targetingKey,
    // so it must agree with the explicit cat of the same two.
    let buckets = json!([["a", 30], ["b", 50], ["c", 20]]);
    let mut explicit = vec![json!({"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]})];
    explicit.extend(buckets.as_array().expect("array").iter().cloned());
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let implicit = run(
            json!({"fractional": buckets}),
            &["a", "b", "c"],
            json!({"targetingKey": user}),
        );
        let explicit = run(
            json!({"fractional": explicit}),
            &["a", "b", "c"],
            json!({"targetingKey": user}),
        );
        assert_eq!(implicit, explicit, "{user}");
    }
}

#[test]
fn fractional_without_a_targeting_key_serves_the_default() {
    let r = run(
        json!({"fractional": [["b", 50], ["c", 50]]}),
        &["a", "b", "c"],
        json!({}),
    );
    assert_eq!(r, (Some("a".into()), Reason::Default));
}

#[test]
fn fractional_is_sticky_and_follows_the_weights() {
    let flags = set(json!({"flags": {"split": {
        "state": "ENABLED",
        "variants": {"lingua": "lingua", "whatlang": "whatlang"},
        "defaultVariant": "whatlang",
        "targeting": {"fractional": [["lingua", 20], ["whatlang", 80]]}
    }}}));
    let mut lingua = 0;
    for i in 0..10_000 {
        let ctx = Context::new(Some(&format!("user-{i}")), Default::default());
        let first = flags.evaluate("split", &ctx).variant;
        assert_eq!(first, flags.evaluate("split", &ctx).variant, "sticky");
        if first == Some("lingua") {
            lingua += 1;
        }
    }
    let share = f64::from(lingua) / 100.0;
    assert!(
        (18.0..=22.0).contains(&share),
        "lingua share {share}% not within 20 ± 2"
    );
}

#[test]
fn fractional_weights_are_relative_default_to_1_and_negative_is_0() {
    // [a] alone has weight 1 against b's 0: everything goes to a.
    for user in ["u1", "u2", "u3", "u4"] {
        let r = run(
            json!({"fractional": [["a"], ["b", -5]]}),
            &["z", "a", "b"],
            json!({"targetingKey": user}),
        );
        assert_eq!(r.0.as_deref(), Some("a"));
    }
    // Weights need not sum to 100: 1:1 splits about evenly.
    let mut a = 0;
    for i in 0..2000 {
        let r = run(
            json!({"fractional": [["a", 1], ["b", 1]]}),
            &["a", "b"],
            json!({"targetingKey": format!("k{i}")}),
        );
        if r.0.as_deref() == Some("a") {
            a += 1;
        }
    }
    assert!((900..=1100).contains(&a), "{a}");
}

#[test]
fn reasons_and_error_codes() {
    let flags = set(json!({"flags": {
        "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "disabled": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "number": {"state": "ENABLED", "variants": {"n": 5}, "defaultVariant": "n"},
        "null-rule": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"if": [{"==": [{"var": "x"}, 1]}, "b", null]}},
        "unknown-name": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
            "targeting": {"cat": ["nope"]}},
        "bool-rule": {"state": "ENABLED", "variants": {"true": "yes", "false": "no"}, "defaultVariant": "false",
            "targeting": {"==": [{"var": "x"}, 1]}},
        "failing": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
            "targeting": {"/": [1, 0]}}
    }}));
    let ctx = Context::from_json(json!({"x": 1})).expect("ctx");
    let r = flags.evaluate("static", &ctx);
    assert_eq!((r.variant, r.reason), (Some("on"), Reason::Static));
    let r = flags.string("disabled", &ctx, "code-default");
    assert_eq!((r.value, r.reason), ("code-default", Reason::Disabled));
    let r = flags.string("missing", &ctx, "code-default");
    assert_eq!(
        (r.value, r.reason, r.error),
        ("code-default", Reason::Error, Some(ErrorCode::FlagNotFound))
    );
    let r = flags.string("number", &ctx, "code-default");
    assert_eq!(
        (r.value, r.error),
        ("code-default", Some(ErrorCode::TypeMismatch))
    );
    assert_eq!(flags.integer("number", &ctx, 0).value, 5);
    let r = flags.evaluate(
        "null-rule",
        &Context::from_json(json!({"x": 2})).expect("ctx"),
    );
    assert_eq!((r.variant, r.reason), (Some("a"), Reason::Default));
    let r = flags.evaluate("null-rule", &ctx);
    assert_eq!((r.variant, r.reason), (Some("b"), Reason::TargetingMatch));
    // A rule naming a variant the flag lacks is flagd's GENERAL error.
    let r = flags.evaluate("unknown-name", &ctx);
    assert_eq!(
        (r.variant, r.reason, r.error),
        (None, Reason::Error, Some(ErrorCode::General))
    );
    let r = flags.evaluate("bool-rule", &ctx);
    assert_eq!(
        (r.value, r.reason),
        (Some(&json!("yes")), Reason::TargetingMatch)
    );
    // A rule that fails while evaluating: flagd's PARSE_ERROR.
    let r = flags.string("failing", &ctx, "code-default");
    assert_eq!(
        (r.value, r.reason, r.error),
        ("code-default", Reason::Error, Some(ErrorCode::ParseError))
    );
}

#[test]
fn context_carries_flagd_properties() {
    assert_eq!(
        logic(json!({"var": "$flagd.flagKey"}), json!({})),
        json!("flag")
    );
    assert_eq!(
        logic(json!({"var": "$flagd.timestamp"}), json!({})),
        json!(1_700_000_000u64)
    );
    assert_eq!(
        logic(json!({">": [{"var": "$flagd.timestamp"}, 0]}), json!({})),
        json!(true)
    );
}

#[test]
fn jsonlogic_operators() {
    let data = json!({"a": 1, "b": "x", "n": {"m": [10, 20]}, "list": [1, 2, 3], "empty": "", "email": "jo@example.com"});
    let cases = [
        (json!({"var": "a"}), json!(1)),
        (json!({"var": "n.m.1"}), json!(20)),
        (json!({"var": ["nope", "dflt"]}), json!("dflt")),
        (json!({"var": ""}), data.clone()),
        (
            json!({"missing": ["a", "zz", "empty"]}),
            json!(["zz", "empty"]),
        ),
        (json!({"missing_some": [1, ["a", "zz"]]}), json!([])),
        (json!({"missing_some": [2, ["a", "zz"]]}), json!(["zz"])),
        (json!({"if": [false, 1, true, 2, 3]}), json!(2)),
        (json!({"if": [false, 1, 3]}), json!(3)),
        (json!({"==": [1, "1"]}), json!(true)),
        (json!({"===": [1, "1"]}), json!(false)),
        (json!({"!=": [1, "2"]}), json!(true)),
        (json!({"!==": [1, 1.0]}), json!(false)),
        (json!({"!": [[]]}), json!(true)),
        (json!({"!!": ["0"]}), json!(true)),
        (json!({"or": [0, "", "x"]}), json!("x")),
        (json!({"and": [1, 0, 2]}), json!(0)),
        (json!({"<": [1, 2]}), json!(true)),
        (json!({"<": [1, 2, 3]}), json!(true)),
        (json!({"<": [1, 3, 3]}), json!(false)),
        (json!({"<=": [1, 3, 3]}), json!(true)),
        (json!({">": ["b", "a"]}), json!(true)),
        (json!({">=": [2, 2]}), json!(true)),
        (json!({"+": [1, "2", 3.5]}), json!(6.5)),
        (json!({"-": [5, 2]}), json!(3.0)),
        (json!({"-": [5]}), json!(-5.0)),
        (json!({"*": [2, 3]}), json!(6.0)),
        (json!({"/": [7, 2]}), json!(3.5)),
        (json!({"%": [7, 2]}), json!(1.0)),
        (json!({"max": [1, 9, 3]}), json!(9.0)),
        (json!({"min": [4, 2, 8]}), json!(2.0)),
        (
            json!({"map": [{"var": "list"}, {"*": [{"var": ""}, 2]}]}),
            json!([2.0, 4.0, 6.0]),
        ),
        (
            json!({"filter": [{"var": "list"}, {">": [{"var": ""}, 1]}]}),
            json!([2, 3]),
        ),
        (
            json!({"reduce": [{"var": "list"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}),
            json!(6.0),
        ),
        (
            json!({"all": [{"var": "list"}, {">": [{"var": ""}, 0]}]}),
            json!(true),
        ),
        (json!({"all": [[], true]}), json!(false)),
        (
            json!({"none": [{"var": "list"}, {">": [{"var": ""}, 5]}]}),
            json!(true),
        ),
        (
            json!({"some": [{"var": "list"}, {"==": [{"var": ""}, 2]}]}),
            json!(true),
        ),
        (json!({"merge": [[1, 2], 3, [4]]}), json!([1, 2, 3, 4])),
        (json!({"in": ["x", ["x", "y"]]}), json!(true)),
        (json!({"in": ["amp", "example"]}), json!(true)),
        (json!({"cat": ["a", 1, "-", true]}), json!("a1-true")),
        (json!({"substr": ["switchyard", 6]}), json!("yard")),
        (json!({"substr": ["switchyard", -4]}), json!("yard")),
        (json!({"substr": ["switchyard", 0, 6]}), json!("switch")),
        (json!({"substr": ["switchyard", 1, -5]}), json!("witc")),
        // A count past any length (it overflowed once) runs to the end.
        (
            json!({"substr": ["switchyard", 2, 9_223_372_036_854_775_807_i64]}),
            json!("itchyard"),
        ),
        (
            json!({"starts_with": [{"var": "email"}, "jo@"]}),
            json!(true),
        ),
        (
            json!({"ends_with": [{"var": "email"}, "@example.com"]}),
            json!(true),
        ),
        // Not a string: null, as flagd (the default variant, not "false").
        (json!({"ends_with": [{"var": "a"}, "1"]}), json!(null)),
        (json!({"sem_ver": ["v1.2.3", ">=", "1.2.0"]}), json!(true)),
        (json!({"sem_ver": ["1.2.3", "^", "2.0.0"]}), json!(false)),
        (json!({"sem_ver": ["1.2.3", "~", "1.2.9"]}), json!(true)),
    ];
    for (rule, expected) in cases {
        assert_eq!(logic(rule.clone(), data.clone()), expected, "{rule}");
    }
}

#[test]
fn shared_evaluators_are_referenced_with_ref() {
    let flags = set(json!({
        "$evaluators": {"is_beta": {"==": [{"var": "user-group"}, "beta"]}},
        "flags": {"engine": {
            "state": "ENABLED", "variants": {"whatlang": "whatlang", "lingua": "lingua"}, "defaultVariant": "whatlang",
            "targeting": {"if": [{"$ref": "is_beta"}, "lingua", null]}
        }}
    }));
    let beta = Context::from_json(json!({"user-group": "beta"})).expect("ctx");
    assert_eq!(flags.evaluate("engine", &beta).variant, Some("lingua"));
    assert_eq!(
        flags.evaluate("engine", &Context::default()).variant,
        Some("whatlang")
    );
}

#[test]
fn yaml_and_json_are_the_same_flag_set() {
    let yaml = "flags:\n  engine:\n    state: ENABLED\n    variants:\n      whatlang: whatlang\n      lingua: lingua\n    defaultVariant: lingua\n";
    let from_yaml = FlagSet::parse("flags.yaml", yaml).expect("yaml");
    let from_json = set(json!({"flags": {"engine": {"state": "ENABLED",
        "variants": {"whatlang": "whatlang", "lingua": "lingua"}, "defaultVariant": "lingua"}}}));
    let ctx = Context::default();
    assert_eq!(
        from_yaml.evaluate("engine", &ctx),
        from_json.evaluate("engine", &ctx)
    );
}

#[test]
fn bad_definitions_name_file_flag_and_problem() {
    let cases = [
        ("", "empty"),
        ("{not json", "not a valid flagd JSON"),
        (
            r#"{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "b"}}}"#,
            "flag `f`: defaultVariant \"b\" is not among",
        ),
        (
            r#"{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"frobnicate": [1]}}}}"#,
            "unknown operator `frobnicate`",
        ),
        (
            r#"{"flags": {"f": {"state": "ON", "variants": {"a": 1}, "defaultVariant": "a"}}}"#,
            "state must be ENABLED or DISABLED",
        ),
        (
            r#"{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": 7}}}"#,
            "invalid type: integer `7`, expected a string",
        ),
        (
            r#"{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "metadata": {"o": {}}}}}"#,
            "metadata `o` must be a string, number or boolean",
        ),
        (
            r#"{"$evaluators": {"x": {"$ref": "x"}}, "flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"$ref": "x"}}}}"#,
            "cycle",
        ),
    ];
    for (content, expected) in cases {
        let err = FlagSet::parse("cm.json", content)
            .expect_err(content)
            .to_string();
        assert!(err.starts_with("cm.json: "), "{err}");
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
    let big = format!(
        "{{\"flags\": {{}}, \"metadata\": \"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    let err = FlagSet::parse("big.json", &big)
        .expect_err("too big")
        .to_string();
    assert!(err.contains("1 MiB"), "{err}");
}

/// A small file whose evaluators double at each level, or chain deeper than
/// the compiler may recurse, is refused at load with a clear error instead
/// of expanding to gigabytes or overflowing the stack on a reload.
#[test]
fn ref_expansion_is_bounded_in_size_and_depth() {
    let flag = |top: &str| {
        format!(
            r#""flags": {{"f": {{"state": "ENABLED", "variants": {{"a": 1}}, "defaultVariant": "a", "targeting": {{"$ref": "{top}"}}}}}}"#
        )
    };
    // e0 = "a"; e(i) = [e(i-1), e(i-1)]: 2^40 nodes from 40 lines.
    let mut doubling = vec![r#""e0": {"if": [true, "a", "a"]}"#.to_owned()];
    for i in 1..=40 {
        doubling.push(format!(
            r#""e{i}": {{"if": [true, {{"$ref": "e{p}"}}, {{"$ref": "e{p}"}}]}}"#,
            p = i - 1
        ));
    }
    let file = format!(
        "{{\"$evaluators\": {{{}}}, {}}}",
        doubling.join(","),
        flag("e40")
    );
    let err = FlagSet::parse("cm.json", &file)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("more than 100000 nodes"), "{err}");

    // Many flags each taking 2^14 nodes (within one flag's bound): the
    // file's bound.
    let flags: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#""f{i}": {{"state": "ENABLED", "variants": {{"a": 1}}, "defaultVariant": "a", "targeting": {{"$ref": "e14"}}}}"#
            )
        })
        .collect();
    let file = format!(
        "{{\"$evaluators\": {{{}}}, \"flags\": {{{}}}}}",
        doubling[..=14].join(","),
        flags.join(",")
    );
    let err = FlagSet::parse("cm.json", &file)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("more than 1000000 nodes"), "{err}");

    // e(i) = {"if": [true, e(i-1), "a"]}, 2,000 deep.
    let mut chain = vec![r#""c0": {"if": [true, "a", "a"]}"#.to_owned()];
    for i in 1..=2000 {
        chain.push(format!(
            r#""c{i}": {{"if": [true, {{"$ref": "c{p}"}}, "a"]}}"#,
            p = i - 1
        ));
    }
    let file = format!(
        "{{\"$evaluators\": {{{}}}, {}}}",
        chain.join(","),
        flag("c2000")
    );
    let err = FlagSet::parse("cm.json", &file)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("deeper than 256 levels"), "{err}");

    // The control: the same shapes within the bounds load and evaluate.
    let file = format!(
        "{{\"$evaluators\": {{{}}}, {}}}",
        doubling[..=10].join(","),
        flag("e10")
    );
    let flags = FlagSet::parse("cm.json", &file).expect("2^10 nodes load");
    assert_eq!(flags.integer("f", &Context::default(), 0).value, 1);
    let file = format!(
        "{{\"$evaluators\": {{{}}}, {}}}",
        chain[..=50].join(","),
        flag("c50")
    );
    let flags = FlagSet::parse("cm.json", &file).expect("50 deep loads");
    assert_eq!(flags.integer("f", &Context::default(), 0).value, 1);
}

#[test]
fn the_built_in_flags_are_valid() {
    let flags = FlagSet::parse("flags.json", BUILT_IN).expect("built-in flags are valid");
    assert_eq!(
        flags.keys(),
        ["dark-launch-engine", "detector-engine", "max-text-chars"]
    );
    let ctx = Context::default();
    assert_eq!(flags.string("detector-engine", &ctx, "x").value, "lingua");
    assert_eq!(flags.string("dark-launch-engine", &ctx, "x").value, "off");
    assert_eq!(flags.integer("max-text-chars", &ctx, 0).value, 10_000);
    let configured = FlagSet::built_in("whatlang", 42);
    assert_eq!(
        configured.string("detector-engine", &ctx, "x").value,
        "whatlang"
    );
    assert_eq!(configured.integer("max-text-chars", &ctx, 0).value, 42);
}

#[test]
fn a_revision_identifies_content_not_its_source() {
    let defaults = crate::configuration::Settings::defaults().expect("defaults are valid");
    let built_in = FlagSet::built_in(
        defaults.detector.default_engine.as_str(),
        defaults.detector.max_text_chars,
    );
    let from_file = FlagSet::parse("flags/flags.json", BUILT_IN).expect("valid");
    let from_configmap = FlagSet::parse("..data/flags.json", BUILT_IN).expect("valid");
    assert_eq!(built_in.revision, from_file.revision);
    assert_eq!(from_file.revision, from_configmap.revision);
    // Other content is another revision, also for the built-in flags when a
    // setting changes their defaults.
    assert_ne!(FlagSet::built_in("lingua", 42).revision, built_in.revision);
    let edited = BUILT_IN.replace("\"tight\": 1000", "\"tight\": 999");
    assert_ne!(
        FlagSet::parse("flags.json", &edited)
            .expect("valid")
            .revision,
        from_file.revision
    );
}

#[test]
fn problems_flagd_tolerates_load_with_a_warning_naming_flag_and_rule() {
    let content = json!({"flags": {
        "ref": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
            "targeting": {"if": [{"$ref": "nope"}, "a", null]}},
        "semver-op": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"if": [{"sem_ver": ["1.0.0", "=>", "1.0.0"]}, "b", null]}},
        "starts": {"state": "ENABLED", "variants": {"a": "a", "false": "f"}, "defaultVariant": "a",
            "targeting": {"starts_with": ["abc"]}},
        "weight": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"fractional": [["b", 0.5]]}},
        "fine": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a"}
    }});
    let flags = set(content);
    let warned: Vec<(&str, &str)> = flags
        .warnings()
        .iter()
        .map(|w| (w.flag.as_deref().unwrap_or(""), w.problem.as_str()))
        .collect();
    assert_eq!(warned.len(), 4, "{warned:?}");
    for (flag, needle) in [
        ("ref", "`$ref` to unknown evaluator \"nope\""),
        ("semver-op", "`sem_ver` operator must be one of"),
        ("starts", "`starts_with` takes 2 arguments, got 1"),
        ("weight", "`fractional` weight must be an integer"),
    ] {
        assert!(
            warned.iter().any(|(f, p)| *f == flag && p.contains(needle)),
            "{flag}: {warned:?}"
        );
    }
    let ctx = Context::default();
    let r = flags.evaluate("ref", &ctx);
    assert_eq!(
        (r.reason, r.error),
        (Reason::Error, Some(ErrorCode::ParseError))
    );
    for key in ["semver-op", "starts", "weight"] {
        let r = flags.evaluate(key, &ctx);
        assert_eq!(
            (r.variant, r.reason, r.error),
            (Some("a"), Reason::Default, None),
            "{key}"
        );
    }
}

#[test]
fn null_or_missing_default_variant_serves_the_code_default() {
    let flags = set(json!({"flags": {
        "null": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": null},
        "missing": {"state": "ENABLED", "variants": {"on": true},
            "targeting": {"if": [{"==": [{"var": "x"}, 1]}, "on", null]}}
    }}));
    let r = flags.evaluate("null", &Context::default());
    assert_eq!(
        (r.value, r.variant, r.reason, r.error),
        (None, None, Reason::Default, None)
    );
    let r = flags.evaluate("missing", &Context::default());
    assert_eq!((r.value, r.reason), (None, Reason::Default));
    let hit = Context::from_json(json!({"x": 1})).expect("ctx");
    let r = flags.evaluate("missing", &hit);
    assert_eq!((r.variant, r.reason), (Some("on"), Reason::TargetingMatch));
}

#[test]
fn metadata_is_merged_flag_over_set() {
    let flags = set(json!({
        "metadata": {"team": "search", "version": 1},
        "flags": {
            "f": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
                "metadata": {"version": 2, "owner": "ana"}},
            "g": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a"}
        }
    }));
    let ctx = Context::default();
    assert_eq!(
        Value::Object(flags.evaluate("f", &ctx).metadata.clone()),
        json!({"team": "search", "version": 2, "owner": "ana"})
    );
    assert_eq!(
        Value::Object(flags.evaluate("g", &ctx).metadata.clone()),
        json!({"team": "search", "version": 1})
    );
    assert!(flags.evaluate("nope", &ctx).metadata.is_empty());
}

/// Fuzzing found it (`fuzz/artifacts/flags_eval/crash-9bf01f92...`): a
/// weight too large for any integer overflowed the total at load (a panic
/// with overflow checks, a wrong small total without). Such a total is over
/// flagd's cap, so the rule gives null and the default variant serves.
#[test]
fn huge_fractional_weights_give_null_not_a_wrapped_total() {
    for weight in [json!(2.7e89), json!(u64::MAX), json!(i64::MAX)] {
        let flags = set(json!({"flags": {"f": {
            "state": "ENABLED",
            "variants": {"a": "a", "b": "b", "c": "c"},
            "defaultVariant": "c",
            "targeting": {"fractional": [["a", weight], ["b", 50]]}
        }}}));
        for key in ["alice", "bob", "carol"] {
            let ctx = Context::new(Some(key), serde_json::Map::new());
            let r = flags.evaluate("f", &ctx);
            assert_eq!(
                (r.variant, r.reason),
                (Some("c"), Reason::Default),
                "{weight}: {key}"
            );
        }
    }
}
