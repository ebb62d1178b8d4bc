//! Accuracy is held to what BENCHMARKS.md publishes, and the default engine
//! answers the README's examples the way the README prints them.
//!
//! The floor reads the published table back from BENCHMARKS.md ("Accuracy",
//! printed by `cargo run --example accuracy`), so the figures the project
//! publishes are the figures CI holds: a dependency update that costs an
//! engine more than [`MARGIN`] points overall or in any length bucket fails.

use std::collections::HashMap;

use switchyard::accuracy::{Bucket, Report, Sample, evaluate, parse};
use switchyard::engine::{Engine, EngineKind, LinguaEngine, WhatlangEngine};

use crate::helpers::{TestApp, settings};

/// How far below its published figure an engine may fall (percentage
/// points): one short text of 240 is 0.4 points, so this allows a few
/// answers to change with a dependency update, not a trend.
const MARGIN: f64 = 2.0;

/// The issue's goals for the shipped default engine.
const GOAL_SHORT: f64 = 95.0;
const GOAL_LONG: f64 = 99.0;

fn evaluation_set() -> Vec<Sample> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/accuracy.tsv");
    let text = std::fs::read_to_string(path).expect("tests/data/accuracy.tsv");
    let samples = parse(&text).expect("the evaluation set parses");
    assert!(samples.len() >= 360, "12 languages x 30 texts at least");
    samples
}

/// The published accuracy per engine: [all, short, medium, long], from
/// the first table of BENCHMARKS.md's "## Accuracy" section.
fn published() -> HashMap<String, [f64; 4]> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let text = std::fs::read_to_string(path).expect("BENCHMARKS.md");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Accuracy"))
        .expect("BENCHMARKS.md has a \"## Accuracy\" section");
    let mut figures = HashMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| engine | all | short | medium | long | und | wrong |"
        let [_, engine, all, short, medium, long, ..] = cells.as_slice() else {
            continue;
        };
        if engine.parse::<EngineKind>().is_err() || figures.contains_key(*engine) {
            continue;
        }
        let pct = |cell: &str| -> f64 {
            cell.trim_end_matches('%')
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a percentage: {cell:?} in {line:?}"))
        };
        figures.insert(
            engine.to_string(),
            [pct(all), pct(short), pct(medium), pct(long)],
        );
    }
    figures
}

fn measured(report: &Report) -> [f64; 4] {
    [
        report.overall.accuracy(),
        report.bucket(Bucket::Short).accuracy(),
        report.bucket(Bucket::Medium).accuracy(),
        report.bucket(Bucket::Long).accuracy(),
    ]
}

fn misses(report: &Report) -> String {
    report
        .misses
        .iter()
        .map(|(s, got)| {
            format!(
                "\n  line {}: {} -> {}: {}",
                s.line,
                s.language.code(),
                got.map_or("und", |l| l.code()),
                s.text
            )
        })
        .collect()
}

#[test]
fn each_engine_stays_within_two_points_of_its_published_accuracy() {
    let samples = evaluation_set();
    let published = published();
    let whatlang = WhatlangEngine::new();
    let lingua = LinguaEngine::load();
    let engines: [(EngineKind, &dyn Engine); 2] = [
        (EngineKind::Whatlang, &whatlang),
        (EngineKind::Lingua, &lingua),
    ];
    for (kind, engine) in engines {
        let floor = published
            .get(kind.as_str())
            .unwrap_or_else(|| panic!("BENCHMARKS.md publishes no accuracy row for {kind}"));
        let report = evaluate(engine, &samples);
        let got = measured(&report);
        for (i, what) in ["all", "short", "medium", "long"].iter().enumerate() {
            assert!(
                got[i] >= floor[i] - MARGIN,
                "{kind} {what}: {:.1} % is more than {MARGIN} points under the published {:.1} %; misses:{}",
                got[i],
                floor[i],
                misses(&report)
            );
        }
    }
}

#[test]
fn the_floor_catches_an_engine_that_got_worse() {
    // The control: the same check on mislabelled data (every text labelled
    // with the next language) fails by a wide margin, so the floor above
    // can fail.
    let mut samples = evaluation_set();
    let all = switchyard::engine::Language::ALL;
    for s in &mut samples {
        let i = all.iter().position(|l| *l == s.language).expect("known");
        s.language = all[(i + 1) % all.len()];
    }
    let report = evaluate(&WhatlangEngine::new(), &samples);
    let floor = published()["whatlang"];
    assert!(
        measured(&report)[0] < floor[0] - MARGIN,
        "{:?}",
        report.overall
    );
}

#[test]
fn the_default_engine_meets_the_goals_for_short_and_long_texts() {
    let default = settings(&[]).detector.default_engine;
    let engine: Box<dyn Engine> = match default {
        EngineKind::Whatlang => Box::new(WhatlangEngine::new()),
        EngineKind::Lingua => Box::new(LinguaEngine::load()),
    };
    let report = evaluate(&*engine, &evaluation_set());
    let short = report.bucket(Bucket::Short).accuracy();
    let long = report.bucket(Bucket::Long).accuracy();
    assert!(
        short >= GOAL_SHORT && long >= GOAL_LONG,
        "default engine {default}: short {short:.1} % (goal {GOAL_SHORT}), long {long:.1} % (goal {GOAL_LONG}); misses:{}",
        misses(&report)
    );
}

/// Every text the README sends to Detect, with the language it is in.
/// A README example missing here fails the test below: add it.
const README_TEXTS: [(&str, &str); 2] = [
    ("Zero downtime deployments with Kubernetes", "en"),
    ("Guten Morgen, wie geht es dir?", "de"),
];

/// The texts of `-d '{"text": "..."}'` in README.md.
fn readme_detect_texts(readme: &str) -> Vec<String> {
    readme
        .split(r#"{"text": ""#)
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(text, _)| text.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_default_engine_answers_the_readmes_examples_as_printed() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let texts = readme_detect_texts(&readme);
    assert!(!texts.is_empty(), "the README sends no text to Detect?");
    let app = TestApp::spawn().await.ready().await;
    let mut cases: Vec<(String, &str)> = texts
        .iter()
        .map(|text| {
            let (_, lang) = README_TEXTS
                .iter()
                .find(|(t, _)| t == text)
                .unwrap_or_else(|| {
                    panic!("README example {text:?}: add its language to README_TEXTS")
                });
            (text.clone(), *lang)
        })
        .collect();
    // The issue's second example.
    cases.push(("Hello world, how are you doing today".to_owned(), "en"));
    for (text, lang) in &cases {
        let reply = app.detect(text, "alice").await.expect("detect");
        assert_eq!(reply.language, *lang, "{text:?}: {reply:?}");
    }

    // The reply the README prints for its first example is the real one.
    let reply = app.detect(&texts[0], "alice").await.expect("detect");
    let printed = readme
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a JSON block after the Detect example");
    let printed: serde_json::Value = serde_json::from_str(printed).expect("the block is JSON");
    assert_eq!(printed["language"], reply.language.as_str(), "{printed}");
    assert_eq!(printed["engine"], reply.engine.as_str(), "{printed}");
    let confidence = printed["confidence"].as_f64().expect("a confidence");
    assert!(
        (confidence - reply.confidence).abs() < 1e-3,
        "README prints {confidence}, Detect answers {}",
        reply.confidence
    );
}
