//! flagd's own conformance suite, run as a table: every Examples row of the
//! flagd-testbed evaluator scenarios (tests/data/flagd-testbed/evaluator/,
//! from open-feature/flagd-testbed v3.9.0, see its README) against the
//! testbed's flag file, and the `@fractional-v3` rows of its provider
//! targeting scenarios against its custom-ops flags with v3 bucketing.
//!
//! The .feature files are read as data by a small reader of the Gherkin
//! subset they use (tags, Scenario / Scenario Outline, steps, Examples
//! tables); each step is matched to what it asks. A row whose step this
//! reader does not know fails the test, so nothing is skipped silently;
//! only `@fractional-v1` rows (a bucketing flagd no longer uses) are left
//! out, and counted as such.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use switchyard::flags::{Context, FlagSet, FlagType, FractionalVersion};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flagd-testbed")
}

/// One runnable row: a scenario's steps with the row's values filled in.
#[derive(Debug, Clone)]
struct Row {
    /// `file: scenario [values]`, for messages.
    name: String,
    tags: Vec<String>,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
struct Step {
    /// The step with the row's values in place.
    text: String,
    /// Its quoted arguments, taken from the template and then filled (a
    /// value may itself hold quotes, as JSON objects do).
    args: Vec<String>,
    /// A data table under the step (the metadata expectations).
    table: Vec<Vec<String>>,
}

/// Gherkin's cell escapes: `\|`, `\\`, `\n`.
fn unescape_cell(cell: &str) -> String {
    let mut out = String::new();
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('|') => out.push('|'),
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn cells(line: &str) -> Vec<String> {
    // Split on `|` not preceded by a backslash.
    let inner = line.trim().trim_start_matches('|');
    let mut out = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in inner.chars() {
        if c == '|' && !escaped {
            out.push(unescape_cell(current.trim()));
            current.clear();
        } else {
            current.push(c);
        }
        escaped = c == '\\' && !escaped;
    }
    out
}

/// Reads a .feature text into rows.
fn parse_feature(file: &str, text: &str) -> Vec<Row> {
    #[derive(Default)]
    struct Scenario {
        name: String,
        tags: Vec<String>,
        steps: Vec<Step>,
        examples: usize,
    }
    let mut rows = Vec::new();
    let mut feature_tags: Vec<String> = Vec::new();
    let mut pending_tags: Vec<String> = Vec::new();
    let mut scenario: Option<Scenario> = None;
    let mut in_background = false;
    // Examples in progress: its tags, header, and whether it is open.
    let mut examples: Option<(Vec<String>, Option<Vec<String>>)> = None;
    let finish = |scenario: Option<Scenario>, rows: &mut Vec<Row>| {
        if let Some(s) = scenario
            && s.examples == 0
        {
            rows.push(Row {
                name: format!("{file}: {}", s.name),
                tags: s.tags,
                steps: s.steps,
            });
        }
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('@') {
            pending_tags.extend(trimmed.split_whitespace().map(str::to_owned));
            continue;
        }
        if trimmed.starts_with("Feature:") {
            feature_tags = std::mem::take(&mut pending_tags);
            continue;
        }
        if trimmed.starts_with("Background:") {
            in_background = true;
            continue;
        }
        if let Some(name) = trimmed
            .strip_prefix("Scenario Outline:")
            .or_else(|| trimmed.strip_prefix("Scenario:"))
        {
            finish(scenario.take(), &mut rows);
            in_background = false;
            examples = None;
            let mut tags = feature_tags.clone();
            tags.append(&mut pending_tags);
            scenario = Some(Scenario {
                name: name.trim().to_owned(),
                tags,
                ..Scenario::default()
            });
            continue;
        }
        if trimmed.starts_with("Examples:") {
            examples = Some((std::mem::take(&mut pending_tags), None));
            continue;
        }
        if trimmed.starts_with('|') {
            let row = cells(trimmed);
            if let Some((tags, header)) = &mut examples {
                let Some(header) = header else {
                    *header = Some(row);
                    continue;
                };
                let s = scenario.as_mut().expect("Examples belong to a scenario");
                s.examples += 1;
                let fill = |text: &str| {
                    header
                        .iter()
                        .zip(&row)
                        .fold(text.to_owned(), |t, (h, v)| t.replace(&format!("<{h}>"), v))
                };
                let mut all_tags = s.tags.clone();
                all_tags.extend(tags.iter().cloned());
                rows.push(Row {
                    name: format!("{file}: {} {row:?}", s.name),
                    tags: all_tags,
                    steps: s
                        .steps
                        .iter()
                        .map(|step| Step {
                            text: fill(&step.text),
                            args: step.args.iter().map(|a| fill(a)).collect(),
                            table: step.table.clone(),
                        })
                        .collect(),
                });
            } else if let Some(step) = scenario.as_mut().and_then(|s| s.steps.last_mut()) {
                step.table.push(row);
            }
            continue;
        }
        let keyword = trimmed.split_whitespace().next().unwrap_or("");
        if ["Given", "And", "When", "Then", "But"].contains(&keyword) {
            if in_background {
                continue;
            }
            let s = scenario.as_mut().expect("a step belongs to a scenario");
            let text = trimmed[keyword.len()..].trim().to_owned();
            s.steps.push(Step {
                args: quoted(&text),
                text,
                table: Vec::new(),
            });
            continue;
        }
        panic!("{file}: a line this reader does not know: {trimmed}");
    }
    finish(scenario, &mut rows);
    rows
}

/// The quoted arguments of a step (a `\"` inside one is part of it).
fn quoted(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut previous = ' ';
    for c in text.chars() {
        match (&mut current, c) {
            (None, '"') => current = Some(String::new()),
            (Some(arg), '"') if previous != '\\' => {
                out.push(std::mem::take(arg));
                current = None;
            }
            (Some(arg), c) => arg.push(c),
            (None, _) => {}
        }
        previous = c;
    }
    out
}

fn flag_type(name: &str) -> FlagType {
    match name {
        "Boolean" => FlagType::Boolean,
        "String" => FlagType::String,
        "Integer" => FlagType::Integer,
        "Float" => FlagType::Float,
        "Object" => FlagType::Object,
        other => panic!("unknown flag type {other}"),
    }
}

/// A cell as a value of `kind` (the testbed writes objects with `\"`).
fn typed(kind: &str, text: &str) -> Result<Value, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{text:?} as {kind}: {e}");
    Ok(match kind {
        "String" => json!(text),
        "Boolean" => json!(text.parse::<bool>().map_err(|e| bad(&e))?),
        "Integer" => json!(text.parse::<i64>().map_err(|e| bad(&e))?),
        "Float" => serde_json::Number::from_f64(text.parse::<f64>().map_err(|e| bad(&e))?)
            .map(Value::Number)
            .ok_or_else(|| bad(&"not finite"))?,
        "Object" => serde_json::from_str(text)
            .or_else(|_| serde_json::from_str(&text.replace("\\\"", "\"")))
            .map_err(|e| bad(&e))?,
        other => return Err(format!("unknown type {other}")),
    })
}

/// Numbers compare by value (`0.0` is `0`), everything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Runs one row against `set`: `Ok(())` when every expectation holds.
fn run_row(set: &FlagSet, row: &Row) -> Result<(), String> {
    let mut kind = None;
    let mut key = String::new();
    let mut fallback = Value::Null;
    let mut attributes = Map::new();
    let mut result = None;
    for step in &row.steps {
        let text = step.text.as_str();
        let args = &step.args;
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        if text == "an evaluator" {
        } else if text.contains("-flag with key") {
            let type_name = text
                .split('-')
                .next()
                .unwrap_or("")
                .trim_start_matches("a ");
            kind = Some(type_name.to_owned());
            key = arg(0);
            fallback = typed(type_name, &arg(1))?;
        } else if text.starts_with("a context containing a targeting key") {
            attributes.insert("targetingKey".into(), json!(arg(0)));
        } else if text.starts_with("a context containing a nested property") {
            let mut inner = Map::new();
            inner.insert(arg(1), json!(arg(2)));
            attributes.insert(arg(0), Value::Object(inner));
        } else if text.starts_with("a context containing a key") {
            attributes.insert(arg(0), typed(&arg(1), &arg(2))?);
        } else if text == "the flag was evaluated with details" {
            let kind_name = kind.as_deref().ok_or("no flag step")?;
            let ctx = Context::from_json(Value::Object(attributes.clone()))?;
            let r = set.evaluate_as(&key, &ctx, flag_type(kind_name));
            result = Some((
                r.value.cloned().unwrap_or_else(|| fallback.clone()),
                r.reason.as_str(),
                r.error.map(|e| e.as_str()),
                r.metadata.clone(),
            ));
        } else {
            let (value, reason, error, metadata) =
                result.as_ref().ok_or("expectation before evaluation")?;
            if text.starts_with("the resolved details value should be") {
                let expected = typed(kind.as_deref().unwrap_or("String"), &arg(0))?;
                if !same(value, &expected) {
                    return Err(format!("value {value}, expected {expected}"));
                }
            } else if text.starts_with("the reason should be") {
                if *reason != arg(0) {
                    return Err(format!("reason {reason}, expected {}", arg(0)));
                }
            } else if text.starts_with("the error-code should be") {
                let expected = arg(0);
                if error.unwrap_or("") != expected {
                    return Err(format!("error code {error:?}, expected {expected:?}"));
                }
            } else if text == "the resolved metadata is empty" {
                if !metadata.is_empty() {
                    return Err(format!("metadata {metadata:?}, expected none"));
                }
            } else if text == "the resolved metadata should contain" {
                for line in step.table.iter().skip(1) {
                    let [k, t, v] = line.as_slice() else {
                        return Err(format!("metadata row {line:?}"));
                    };
                    let expected = typed(t, v)?;
                    match metadata.get(k) {
                        Some(got) if same(got, &expected) => {}
                        got => return Err(format!("metadata {k}: {got:?}, expected {expected}")),
                    }
                }
            } else {
                return Err(format!("a step this harness does not know: {text}"));
            }
        }
    }
    if result.is_none() {
        return Err("the row never evaluates".into());
    }
    Ok(())
}

fn load(relative: &str, version: FractionalVersion) -> FlagSet {
    let path = data_dir().join(relative);
    let content = std::fs::read_to_string(&path).expect("testbed flags");
    FlagSet::parse(relative, &content)
        .unwrap_or_else(|e| panic!("the testbed's flag file loads: {e}"))
        .with_fractional_version(version)
}

fn feature_rows(relative: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(data_dir().join(relative)).expect("feature file");
    parse_feature(relative, &text)
}

/// Runs `rows` on `set`; returns the failures.
fn failures(set: &FlagSet, rows: &[&Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|row| {
            run_row(set, row)
                .err()
                .map(|e| format!("{}: {e}", row.name))
        })
        .collect()
}

fn has(row: &Row, tag: &str) -> bool {
    row.tags.iter().any(|t| t == tag)
}

/// Every evaluator scenario row that applies to v2 bucketing (all but
/// `@fractional-v1`), with the testbed's flags: value, reason, error code
/// and metadata as flagd gives them.
#[test]
fn the_flagd_testbed_evaluator_suite_passes() {
    let set = load("evaluator/flags/testkit-flags.json", FractionalVersion::V2);
    let mut features: Vec<String> = std::fs::read_dir(data_dir().join("evaluator/gherkin"))
        .expect("gherkin dir")
        .filter_map(Result::ok)
        .map(|e| format!("evaluator/gherkin/{}", e.file_name().to_string_lossy()))
        .collect();
    features.sort();
    assert_eq!(
        features.len(),
        11,
        "the testbed's eleven evaluator features"
    );
    let all: Vec<Row> = features.iter().flat_map(|f| feature_rows(f)).collect();
    let applicable: Vec<&Row> = all.iter().filter(|r| !has(r, "@fractional-v1")).collect();
    let failed = failures(&set, &applicable);
    println!(
        "flagd-testbed v3.9.0 evaluator suite: {} of {} rows pass ({} @fractional-v1 rows do not apply)",
        applicable.len() - failed.len(),
        applicable.len(),
        all.len() - applicable.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    // Pinned, so a reader that drops rows cannot pass.
    assert_eq!(
        (all.len(), applicable.len()),
        (EVALUATOR_ROWS, EVALUATOR_ROWS - 15)
    );
}

/// Rows in the eleven evaluator features (v1 ones included).
const EVALUATOR_ROWS: usize = 140;

/// The testbed's `@fractional-v3` vectors (provider targeting scenarios,
/// custom-ops flags), with `flags.fractional_version = v3`.
#[test]
fn the_flagd_testbed_fractional_v3_vectors_pass() {
    let set = load("flags/custom-ops.json", FractionalVersion::V3);
    let all = feature_rows("gherkin/targeting.feature");
    let v3: Vec<&Row> = all.iter().filter(|r| has(r, "@fractional-v3")).collect();
    let failed = failures(&set, &v3);
    println!(
        "flagd-testbed v3.9.0 @fractional-v3 rows: {} of {} pass",
        v3.len() - failed.len(),
        v3.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert_eq!(v3.len(), V3_ROWS);
    // And v2 bucketing puts some of the same users elsewhere: the setting
    // is what makes these pass.
    let v2 = load("flags/custom-ops.json", FractionalVersion::V2);
    assert!(!failures(&v2, &v3).is_empty());
}

/// `@fractional-v3` rows in the provider targeting feature.
const V3_ROWS: usize = 132;

/// The harness sees a failure: a row with a wrong expected value, reason,
/// error code or metadata fails, and an unknown step fails.
#[test]
fn the_testbed_harness_detects_failures() {
    let set = load("evaluator/flags/testkit-flags.json", FractionalVersion::V2);
    let feature = r#"
Feature: control
  Scenario Outline: wrong expectations
    Given an evaluator
    And a <type>-flag with key "<key>" and a fallback value "<default>"
    When the flag was evaluated with details
    Then the <what> should be "<expected>"
    Examples:
      | key           | type    | default | what                   | expected        |
      | boolean-flag  | Boolean | false   | resolved details value | false           |
      | string-flag   | String  | bye     | reason                 | TARGETING_MATCH |
      | missing-flag  | String  | bye     | error-code             | GENERAL         |
      | string-flag   | String  | bye     | error-code             | FLAG_NOT_FOUND  |
      | wrong-flag    | Integer | 13      | unknown thing          | x               |
  Scenario: metadata
    Given a Boolean-flag with key "metadata-flag" and a fallback value "false"
    When the flag was evaluated with details
    Then the resolved metadata should contain
      | key     | metadata_type | value |
      | string  | String        | 1.0.3 |
"#;
    let rows = parse_feature("control.feature", feature);
    assert_eq!(rows.len(), 6);
    let refs: Vec<&Row> = rows.iter().collect();
    assert_eq!(
        failures(&set, &refs).len(),
        6,
        "{:#?}",
        failures(&set, &refs)
    );
}
