//! How often each engine names the right language, measured on a labelled
//! evaluation set (`tests/data/accuracy.tsv`, written for this project).
//!
//! One implementation serves the published figures (`cargo run --example
//! accuracy`, BENCHMARKS.md) and the floor the test suite holds
//! them to (tests/api/accuracy.rs), so the two cannot count differently.
//! An `und` answer is reported in its own column and counted as a miss: it
//! is not the right language, and a rule that answered `und` more often
//! must not look more accurate for it.

use std::collections::BTreeMap;
use std::fmt;

use crate::engine::{Engine, Language};

/// Length buckets by Unicode characters, the ones issue 13 sets goals for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// 20 to 40 characters: a chat line, a title.
    Short,
    /// 41 to 100 characters: a sentence.
    Medium,
    /// Over 100 characters: a paragraph.
    Long,
}

impl Bucket {
    /// Every bucket, shortest first.
    pub const ALL: [Bucket; 3] = [Bucket::Short, Bucket::Medium, Bucket::Long];

    /// The bucket of a text; `None` under 20 characters (too short to set
    /// a goal for: the set holds none).
    pub fn of(text: &str) -> Option<Bucket> {
        match text.chars().count() {
            0..20 => None,
            20..=40 => Some(Bucket::Short),
            41..=100 => Some(Bucket::Medium),
            _ => Some(Bucket::Long),
        }
    }

    /// The name used in reports ("short").
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Short => "short",
            Bucket::Medium => "medium",
            Bucket::Long => "long",
        }
    }

    /// The range in characters, for table headings ("20–40").
    pub fn range(self) -> &'static str {
        match self {
            Bucket::Short => "20–40",
            Bucket::Medium => "41–100",
            Bucket::Long => ">100",
        }
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The language it is written in.
    pub language: Language,
    /// The text.
    pub text: String,
    /// Its length bucket (computed, not stored in the file).
    pub bucket: Bucket,
    /// Its line in the file (1-based), to point at it in a report.
    pub line: usize,
}

/// A line of the evaluation file that is not a sample.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// No tab between the code and the text.
    #[error("line {line}: expected `code<TAB>text`")]
    NoTab { line: usize },
    /// The code is not one of [`Language::ALL`].
    #[error("line {line}: {reason}")]
    Language { line: usize, reason: String },
    /// The text is under 20 characters (no bucket).
    #[error("line {line}: text of {chars} characters, the shortest bucket starts at 20")]
    TooShort { line: usize, chars: usize },
}

/// Parses the evaluation file: one `code<TAB>text` per line; blank lines
/// and lines starting with `#` are skipped.
pub fn parse(tsv: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, raw) in tsv.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let (code, text) = raw.split_once('\t').ok_or(ParseError::NoTab { line })?;
        let language = code
            .parse::<Language>()
            .map_err(|reason| ParseError::Language { line, reason })?;
        let bucket = Bucket::of(text).ok_or(ParseError::TooShort {
            line,
            chars: text.chars().count(),
        })?;
        samples.push(Sample {
            language,
            text: text.to_owned(),
            bucket,
            line,
        });
    }
    Ok(samples)
}

/// Counts of one slice of the set (an engine's whole run, one bucket, one
/// language).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Samples seen.
    pub total: usize,
    /// Answered with the labelled language.
    pub correct: usize,
    /// Answered `und` (counted in neither `correct` nor `wrong`).
    pub und: usize,
}

impl Tally {
    fn add(&mut self, expected: Language, got: Option<Language>) {
        self.total += 1;
        match got {
            Some(l) if l == expected => self.correct += 1,
            Some(_) => {}
            None => self.und += 1,
        }
    }

    /// Answered with another language.
    pub fn wrong(&self) -> usize {
        self.total - self.correct - self.und
    }

    /// Correct answers in percent of all samples (`und` counts as a miss);
    /// 0 for an empty tally.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }
}

/// One engine's results on the whole set.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// All samples.
    pub overall: Tally,
    /// Per length bucket.
    pub by_bucket: BTreeMap<Bucket, Tally>,
    /// Per labelled language (its code) and bucket.
    pub cells: BTreeMap<(&'static str, Bucket), Tally>,
    /// (labelled, answered) → count, for the misses only (`None` is `und`).
    pub confusions: BTreeMap<(&'static str, &'static str), usize>,
    /// Every miss: the sample and the answer.
    pub misses: Vec<(Sample, Option<Language>)>,
}

impl Report {
    /// The tally of a bucket (empty if the set has none).
    pub fn bucket(&self, bucket: Bucket) -> Tally {
        self.by_bucket.get(&bucket).copied().unwrap_or_default()
    }

    /// The tally of one language in one bucket.
    pub fn cell(&self, language: Language, bucket: Bucket) -> Tally {
        self.cells
            .get(&(language.code(), bucket))
            .copied()
            .unwrap_or_default()
    }

    /// The tally of one language over all buckets.
    pub fn language(&self, language: Language) -> Tally {
        Bucket::ALL
            .into_iter()
            .map(|b| self.cell(language, b))
            .fold(Tally::default(), |a, t| Tally {
                total: a.total + t.total,
                correct: a.correct + t.correct,
                und: a.und + t.und,
            })
    }

    /// Confusions as unordered language pairs ("es/pt"), both directions
    /// summed, most frequent first; `und` answers are left out.
    pub fn confusion_pairs(&self) -> Vec<(String, usize)> {
        let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (&(want, got), &n) in &self.confusions {
            if got == "und" {
                continue;
            }
            let key = if want <= got {
                (want, got)
            } else {
                (got, want)
            };
            *pairs.entry(key).or_default() += n;
        }
        let mut pairs: Vec<_> = pairs
            .into_iter()
            .map(|((a, b), n)| (format!("{a}/{b}"), n))
            .collect();
        pairs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        pairs
    }
}

/// Runs every sample through `engine` and counts.
pub fn evaluate(engine: &dyn Engine, samples: &[Sample]) -> Report {
    let mut report = Report::default();
    for sample in samples {
        let got = engine.detect(&sample.text).language;
        report.overall.add(sample.language, got);
        report
            .by_bucket
            .entry(sample.bucket)
            .or_default()
            .add(sample.language, got);
        report
            .cells
            .entry((sample.language.code(), sample.bucket))
            .or_default()
            .add(sample.language, got);
        if got != Some(sample.language) {
            let answered = got.map_or("und", |l| l.code());
            *report
                .confusions
                .entry((sample.language.code(), answered))
                .or_default() += 1;
            report.misses.push((sample.clone(), got));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Detection, EngineKind};

    /// Answers English for everything, `und` for text containing "?".
    struct AlwaysEnglish;

    impl Engine for AlwaysEnglish {
        fn kind(&self) -> EngineKind {
            EngineKind::Whatlang
        }

        fn detect(&self, text: &str) -> Detection {
            Detection {
                language: (!text.contains('?')).then_some(Language::English),
                confidence: 1.0,
            }
        }
    }

    const SET: &str = "# a comment\n\
        en\tThe train was late this morning.\n\
        \n\
        de\tDer Zug hatte heute Morgen Verspätung, leider wieder einmal.\n\
        es\t¿Dónde has aparcado el coche esta vez?\n";

    #[test]
    fn buckets_follow_the_character_count_not_bytes() {
        assert_eq!(Bucket::of("ééééééééééééééééééé"), None); // 19 chars, 38 bytes
        assert_eq!(Bucket::of(&"é".repeat(20)), Some(Bucket::Short));
        assert_eq!(Bucket::of(&"é".repeat(40)), Some(Bucket::Short));
        assert_eq!(Bucket::of(&"a".repeat(41)), Some(Bucket::Medium));
        assert_eq!(Bucket::of(&"a".repeat(100)), Some(Bucket::Medium));
        assert_eq!(Bucket::of(&"a".repeat(101)), Some(Bucket::Long));
    }

    #[test]
    fn parse_skips_comments_and_blank_lines_and_computes_buckets() {
        let samples = parse(SET).expect("valid");
        let got: Vec<_> = samples
            .iter()
            .map(|s| (s.language, s.bucket, s.line))
            .collect();
        assert_eq!(
            got,
            [
                (Language::English, Bucket::Short, 2),
                (Language::German, Bucket::Medium, 4),
                (Language::Spanish, Bucket::Short, 5),
            ]
        );
    }

    #[test]
    fn parse_names_the_bad_line() {
        assert_eq!(
            parse("en\tfine sentence, long enough\nen no tab here at all, sorry"),
            Err(ParseError::NoTab { line: 2 })
        );
        assert!(matches!(
            parse("xx\tnot a language we support here"),
            Err(ParseError::Language { line: 1, .. })
        ));
        assert_eq!(
            parse("en\ttoo short"),
            Err(ParseError::TooShort { line: 1, chars: 9 })
        );
    }

    #[test]
    fn misses_and_und_are_counted_apart_and_und_is_not_correct() {
        let samples = parse(SET).expect("valid");
        let report = evaluate(&AlwaysEnglish, &samples);
        assert_eq!(
            report.overall,
            Tally {
                total: 3,
                correct: 1,
                und: 1
            }
        );
        assert_eq!(report.overall.wrong(), 1);
        assert!((report.overall.accuracy() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            report.bucket(Bucket::Short),
            Tally {
                total: 2,
                correct: 1,
                und: 1
            }
        );
        assert_eq!(report.bucket(Bucket::Long), Tally::default());
        assert_eq!(report.confusions.get(&("de", "en")), Some(&1));
        assert_eq!(report.confusions.get(&("es", "und")), Some(&1));
        assert_eq!(report.confusion_pairs(), [("de/en".to_owned(), 1)]);
        assert_eq!(report.misses.len(), 2);
        let german = Tally {
            total: 1,
            correct: 0,
            und: 0,
        };
        assert_eq!(report.language(Language::German), german);
        assert_eq!(report.cell(Language::German, Bucket::Medium), german);
        assert_eq!(
            report.cell(Language::German, Bucket::Short),
            Tally::default()
        );
    }
}
