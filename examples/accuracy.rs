//! Accuracy of both engines on the project's labelled evaluation set
//! (`tests/data/accuracy.tsv`): the tables of BENCHMARKS.md, "Accuracy".
//!
//! Run: `cargo run --example accuracy [-- [--misses] [FILE]]` (accuracy does
//! not depend on the build profile; dependencies are optimised in dev too).
//!
//! Prints Markdown: accuracy per engine overall and per length bucket, per
//! language, the confusion pairs, and how the `und` threshold trades right
//! answers for caught wrong ones. `--misses` adds every wrong or `und`
//! answer. The engines are the service's own (`switchyard::engine`), with
//! the shipped `und` thresholds unless a sweep row says otherwise.

use std::time::Instant;

use switchyard::accuracy::{Bucket, Report, Sample, evaluate, parse};
use switchyard::engine::{Engine, EngineKind, Language, LinguaEngine, WhatlangEngine};

/// The `und` thresholds tried in the sweep (the lead of the first language
/// over the second below which the answer is `und`).
/// 0.9 is whatlang's own `is_reliable()` bar.
const SWEEP: [f64; 8] = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.9];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut misses = false;
    let mut path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/accuracy.tsv").to_owned();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--misses" => misses = true,
            "-h" | "--help" => {
                println!("usage: accuracy [--misses] [FILE]");
                return Ok(());
            }
            _ => path = arg,
        }
    }
    let samples = parse(&std::fs::read_to_string(&path)?)?;

    let whatlang = WhatlangEngine::new();
    let started = Instant::now();
    let lingua = LinguaEngine::load();
    eprintln!("lingua loaded in {:?}", started.elapsed());
    let engines: [(EngineKind, &dyn Engine); 2] = [
        (EngineKind::Whatlang, &whatlang),
        (EngineKind::Lingua, &lingua),
    ];
    let reports: Vec<(EngineKind, Report)> = engines
        .iter()
        .map(|&(kind, engine)| (kind, evaluate(engine, &samples)))
        .collect();

    summary(&samples, &reports);
    per_language(&reports);
    confusions(&reports);
    sweep(&samples, &reports);
    if misses {
        for (kind, report) in &reports {
            println!("\nMisses of {kind}:\n");
            if report.misses.is_empty() {
                println!("- none");
            }
            for (sample, got) in &report.misses {
                let got = got.map_or("und", Language::code);
                println!(
                    "- line {}: {} → {got}: {}",
                    sample.line,
                    sample.language.code(),
                    sample.text
                );
            }
        }
    }
    Ok(())
}

/// Percent with one decimal, as the floor test reads it back.
fn pct(value: f64) -> String {
    format!("{value:.1} %")
}

fn summary(samples: &[Sample], reports: &[(EngineKind, Report)]) {
    let count = |b: Bucket| samples.iter().filter(|s| s.bucket == b).count();
    println!(
        "{} texts, {} languages: {} short, {} medium, {} long.\n",
        samples.len(),
        Language::ALL.len(),
        count(Bucket::Short),
        count(Bucket::Medium),
        count(Bucket::Long)
    );
    let mut head = "| engine | all |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for b in Bucket::ALL {
        head.push_str(&format!(" {} ({}) |", b, b.range()));
        rule.push_str("---|");
    }
    println!("{head} und | wrong |\n{rule}---|---|");
    for (kind, report) in reports {
        let mut row = format!("| {kind} | {} |", pct(report.overall.accuracy()));
        for b in Bucket::ALL {
            row.push_str(&format!(" {} |", pct(report.bucket(b).accuracy())));
        }
        println!(
            "{row} {} | {} |",
            report.overall.und,
            report.overall.wrong()
        );
    }
}

fn per_language(reports: &[(EngineKind, Report)]) {
    println!("\nPer language (right / texts; `und` answers in brackets):\n");
    let mut head = "| language |".to_owned();
    let mut rule = "|---|".to_owned();
    for (kind, _) in reports {
        for b in Bucket::ALL {
            head.push_str(&format!(" {kind} {b} |"));
            rule.push_str("---|");
        }
    }
    println!("{head}\n{rule}");
    for lang in Language::ALL {
        let mut row = format!("| {} |", lang.code());
        for (_, report) in reports {
            for b in Bucket::ALL {
                let tally = report.cell(lang, b);
                let und = if tally.und > 0 {
                    format!(" ({})", tally.und)
                } else {
                    String::new()
                };
                row.push_str(&format!(" {}/{}{und} |", tally.correct, tally.total));
            }
        }
        println!("{row}");
    }
}

fn confusions(reports: &[(EngineKind, Report)]) {
    println!("\nConfusion pairs (wrong answers between two languages, both directions):\n");
    let mut pairs: Vec<String> = reports
        .iter()
        .flat_map(|(_, r)| r.confusion_pairs().into_iter().map(|(p, _)| p))
        .collect();
    pairs.sort();
    pairs.dedup();
    let mut head = "| pair |".to_owned();
    let mut rule = "|---|".to_owned();
    for (kind, _) in reports {
        head.push_str(&format!(" {kind} |"));
        rule.push_str("---|");
    }
    println!("{head}\n{rule}");
    let mut rows: Vec<(usize, String)> = pairs
        .iter()
        .map(|pair| {
            let mut total = 0;
            let mut row = format!("| {pair} |");
            for (_, report) in reports {
                let n = report
                    .confusion_pairs()
                    .into_iter()
                    .find(|(p, _)| p == pair)
                    .map_or(0, |(_, n)| n);
                total += n;
                row.push_str(&format!(" {n} |"));
            }
            (total, row)
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (_, row) in rows {
        println!("{row}");
    }
}

/// For each threshold: how many answers turn `und`, split into those that
/// were right and those that were wrong with no threshold at all.
fn sweep(samples: &[Sample], reports: &[(EngineKind, Report)]) {
    println!(
        "\n`und` threshold sweep (answers that turn `und` compared with threshold 0: right ones lost, wrong ones caught; accuracy with `und` counted as a miss):\n"
    );
    println!(
        "| engine | threshold | und | right → und | wrong → und | all | short | long |\n|---|---|---|---|---|---|---|---|"
    );
    for (kind, _) in reports {
        let base = evaluate(&*engine_with(*kind, 0.0), samples);
        for margin in SWEEP {
            let report = evaluate(&*engine_with(*kind, margin), samples);
            let (mut lost, mut caught) = (0, 0);
            for (sample, got) in &report.misses {
                if got.is_none() {
                    let before = base.misses.iter().find(|(s, _)| s.line == sample.line);
                    match before {
                        None => lost += 1,
                        Some((_, Some(_))) => caught += 1,
                        Some((_, None)) => {}
                    }
                }
            }
            println!(
                "| {kind} | {margin} | {} | {lost} | {caught} | {} | {} | {} |",
                report.overall.und,
                pct(report.overall.accuracy()),
                pct(report.bucket(Bucket::Short).accuracy()),
                pct(report.bucket(Bucket::Long).accuracy()),
            );
        }
    }
}

fn engine_with(kind: EngineKind, margin: f64) -> Box<dyn Engine> {
    match kind {
        EngineKind::Whatlang => Box::new(WhatlangEngine::with_min_margin(margin)),
        EngineKind::Lingua => Box::new(LinguaEngine::load_with_min_margin(margin)),
    }
}
