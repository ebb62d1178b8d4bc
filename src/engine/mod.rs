//! The detection engines behind one trait, and the loader that readies them.
//!
//! Both engines choose among the same [`Language`] set, so their answers are
//! comparable: that is what makes A/B tests and dark launches between them
//! meaningful. Engines are synchronous and CPU-bound; [`crate::execution`]
//! runs them where their [`Cost`] says (inline, inline on an engine turn,
//! or on a fixed pool) and warms them up before readiness.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod warm_up;

/// The languages Switchyard detects: the same set for both engines (lingua's
/// cargo features and whatlang's allowlist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Czech,
    Dutch,
    English,
    French,
    German,
    Italian,
    Polish,
    Portuguese,
    Russian,
    Spanish,
    Swedish,
    Turkish,
}

impl Language {
    /// Every supported language.
    pub const ALL: [Language; 12] = [
        Language::Czech,
        Language::Dutch,
        Language::English,
        Language::French,
        Language::German,
        Language::Italian,
        Language::Polish,
        Language::Portuguese,
        Language::Russian,
        Language::Spanish,
        Language::Swedish,
        Language::Turkish,
    ];

    /// The ISO 639-1 code ("en").
    pub fn code(self) -> &'static str {
        match self {
            Language::Czech => "cs",
            Language::Dutch => "nl",
            Language::English => "en",
            Language::French => "fr",
            Language::German => "de",
            Language::Italian => "it",
            Language::Polish => "pl",
            Language::Portuguese => "pt",
            Language::Russian => "ru",
            Language::Spanish => "es",
            Language::Swedish => "sv",
            Language::Turkish => "tr",
        }
    }

    fn to_whatlang(self) -> whatlang::Lang {
        use whatlang::Lang;
        match self {
            Language::Czech => Lang::Ces,
            Language::Dutch => Lang::Nld,
            Language::English => Lang::Eng,
            Language::French => Lang::Fra,
            Language::German => Lang::Deu,
            Language::Italian => Lang::Ita,
            Language::Polish => Lang::Pol,
            Language::Portuguese => Lang::Por,
            Language::Russian => Lang::Rus,
            Language::Spanish => Lang::Spa,
            Language::Swedish => Lang::Swe,
            Language::Turkish => Lang::Tur,
        }
    }

    fn from_whatlang(lang: whatlang::Lang) -> Option<Self> {
        Language::ALL.into_iter().find(|l| l.to_whatlang() == lang)
    }

    fn to_lingua(self) -> lingua::Language {
        use lingua::Language as L;
        match self {
            Language::Czech => L::Czech,
            Language::Dutch => L::Dutch,
            Language::English => L::English,
            Language::French => L::French,
            Language::German => L::German,
            Language::Italian => L::Italian,
            Language::Polish => L::Polish,
            Language::Portuguese => L::Portuguese,
            Language::Russian => L::Russian,
            Language::Spanish => L::Spanish,
            Language::Swedish => L::Swedish,
            Language::Turkish => L::Turkish,
        }
    }

    fn from_lingua(lang: lingua::Language) -> Option<Self> {
        Language::ALL.into_iter().find(|l| l.to_lingua() == lang)
    }
}

impl FromStr for Language {
    type Err = String;

    /// Parses an ISO 639-1 code of a supported language ("en").
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Language::ALL
            .into_iter()
            .find(|l| l.code() == code)
            .ok_or_else(|| {
                let known: Vec<_> = Language::ALL.iter().map(|l| l.code()).collect();
                format!(
                    "unknown language code {code:?} (expected one of {})",
                    known.join(", ")
                )
            })
    }
}

/// Which engine answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Trigram-based, fast, no models to load.
    Whatlang,
    /// N-gram models for each language, more accurate on short text, loads
    /// its models at startup.
    Lingua,
}

impl EngineKind {
    /// Both engines, in [`EngineKind::index`] order.
    pub const ALL: [EngineKind; 2] = [EngineKind::Whatlang, EngineKind::Lingua];

    /// 0 for whatlang, 1 for lingua: the slot of per-engine arrays.
    pub fn index(self) -> usize {
        match self {
            EngineKind::Whatlang => 0,
            EngineKind::Lingua => 1,
        }
    }

    /// The name used on the wire, in metrics and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Whatlang => "whatlang",
            EngineKind::Lingua => "lingua",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "whatlang" => Ok(EngineKind::Whatlang),
            "lingua" => Ok(EngineKind::Lingua),
            other => Err(format!(
                "unknown engine {other:?} (expected whatlang or lingua)"
            )),
        }
    }
}

/// One engine's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// `None` when no language is reliable (reported as "und"): see
    /// [`Detection::judged`].
    pub language: Option<Language>,
    /// From 0 to 1: whatlang's confidence, lingua's probability of the
    /// language answered; 0 for `und`.
    pub confidence: f64,
}

impl Detection {
    /// The answer when no language is reliable.
    pub const UND: Detection = Detection {
        language: None,
        confidence: 0.0,
    };

    /// The one rule both engines follow for `und`: an answer is reliable
    /// only when the engine's first choice leads its second by more than
    /// `min_margin`, on the engine's own 0-1 scale. A tie (margin 0) is
    /// always `und`, and so is text without letters (no first choice).
    ///
    /// The margin is what each engine offers as its own reliability
    /// measure: whatlang's `confidence` is already the first choice's lead
    /// over the second (0 on a tie, 1 when far ahead), and lingua's
    /// `minimum_relative_distance` compares the first two probabilities.
    /// The thresholds ([`WhatlangEngine::MIN_MARGIN`],
    /// [`LinguaEngine::MIN_MARGIN`]) are read off the evaluation set.
    pub fn judged(
        language: Option<Language>,
        confidence: f64,
        margin: f64,
        min_margin: f64,
    ) -> Detection {
        match language {
            Some(language) if margin > min_margin => Detection {
                language: Some(language),
                confidence: confidence.clamp(0.0, 1.0),
            },
            _ => Detection::UND,
        }
    }
}

/// A language detector. Implementations are CPU-bound and synchronous.
pub trait Engine: Send + Sync + 'static {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
    /// Detects the language of `text`. Never fails: an unreliable answer is
    /// `language: None`.
    fn detect(&self, text: &str) -> Detection;

    /// Makes the first real call cost what the thousandth does: runs before
    /// readiness turns SERVING, on every engine thread. By default one
    /// detection of each text in [`warm_up::TEXTS`] (three per
    /// supported language), which maps in the model data those calls touch.
    fn warm_up(&self) {
        for (_, text) in warm_up::TEXTS {
            self.detect(text);
        }
    }

    /// What a call on a text of up to `detector.inline_max_chars`
    /// characters costs, which decides where it runs ([`Cost`]). The
    /// default, [`Cost::Unknown`], always uses the engine pool, so a slow or
    /// unknown engine can never stall the runtime.
    fn cost(&self) -> Cost {
        Cost::Unknown
    }
}

/// What an engine's call on a text of up to `detector.inline_max_chars`
/// characters costs, measured (BENCHMARKS.md, "Execution model").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// Tens of microseconds, like the rest of a request's work: runs inline
    /// on the request task.
    Light,
    /// Under a millisecond: runs inline on the request task once it holds one
    /// of the engine turns (one per engine thread), so at most that many such
    /// calls hold runtime workers at once and the others wait parked.
    Bounded,
    /// Not measured, or unbounded: always on the engine pool.
    Unknown,
}

/// whatlang restricted to [`Language::ALL`].
pub struct WhatlangEngine {
    detector: whatlang::Detector,
    min_margin: f64,
}

impl WhatlangEngine {
    /// Below this confidence (whatlang's lead of the first language over
    /// the second) the answer is `und`. On the evaluation set, whatlang's
    /// answers under 0.02 were all wrong, while from 0.02 to 0.05 half were
    /// right: a higher bar turns right answers into `und` as often as wrong
    /// ones (BENCHMARKS.md, "Accuracy"). whatlang's own `is_reliable()`
    /// (above 0.9) would make a third of the set `und`, 158 right answers
    /// among them.
    pub const MIN_MARGIN: f64 = 0.02;

    /// Builds the detector (instant: whatlang has no models to load).
    pub fn new() -> Self {
        Self::with_min_margin(Self::MIN_MARGIN)
    }

    /// A detector with another `und` threshold (the accuracy example
    /// sweeps it).
    pub fn with_min_margin(min_margin: f64) -> Self {
        let allow = Language::ALL.iter().map(|l| l.to_whatlang()).collect();
        Self {
            detector: whatlang::Detector::with_allowlist(allow),
            min_margin,
        }
    }
}

impl Default for WhatlangEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine for WhatlangEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Whatlang
    }

    /// ~20 µs for a sentence, ~30 µs at 1,000 characters (BENCHMARKS.md,
    /// "Execution model").
    fn cost(&self) -> Cost {
        Cost::Light
    }

    fn detect(&self, text: &str) -> Detection {
        match self.detector.detect(text) {
            Some(info) => Detection::judged(
                Language::from_whatlang(info.lang()),
                info.confidence(),
                info.confidence(),
                self.min_margin,
            ),
            None => Detection::UND,
        }
    }
}

/// lingua restricted to [`Language::ALL`], with its models preloaded.
pub struct LinguaEngine {
    detector: lingua::LanguageDetector,
    min_margin: f64,
}

impl LinguaEngine {
    /// At or below this lead of the first language's probability over the
    /// second's the answer is `und`: only a tie, lingua's own default
    /// (`minimum_relative_distance` 0). lingua answered every text of the
    /// evaluation set correctly, the closest with a lead of 0.008 ("Il a
    /// plu tout le week-end."), so any higher bar only turns right answers
    /// into `und` (BENCHMARKS.md, "Accuracy").
    pub const MIN_MARGIN: f64 = 0.0;

    /// Builds the detector for every supported language. lingua's models
    /// are compiled into the binary: "loading" one only wraps its bytes, and
    /// the real cost, paging the data in, is paid by the first lookups, that
    /// is by [`Engine::warm_up`] on the engine threads before readiness.
    /// `with_preloaded_language_models` is not used: it does the same
    /// wrapping in parallel on rayon's global pool, which then keeps one
    /// idle thread per core for the life of the process, and lingua's
    /// per-text API never uses rayon (BENCHMARKS.md, "Execution model").
    pub fn load() -> Self {
        Self::load_with_min_margin(Self::MIN_MARGIN)
    }

    /// Loads it with another `und` threshold (the accuracy example sweeps
    /// it).
    pub fn load_with_min_margin(min_margin: f64) -> Self {
        let languages: Vec<_> = Language::ALL.iter().map(|l| l.to_lingua()).collect();
        let detector = lingua::LanguageDetectorBuilder::from_languages(&languages).build();
        Self {
            detector,
            min_margin,
        }
    }
}

impl Engine for LinguaEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Lingua
    }

    /// ~270 µs for a sentence, ~440 µs at 1,000 characters (BENCHMARKS.md,
    /// "Execution model").
    fn cost(&self) -> Cost {
        Cost::Bounded
    }

    fn detect(&self, text: &str) -> Detection {
        let values = self.detector.compute_language_confidence_values(text);
        match values.as_slice() {
            [(lang, first), rest @ ..] => {
                let second = rest.first().map_or(0.0, |&(_, p)| p);
                Detection::judged(
                    Language::from_lingua(*lang),
                    *first,
                    first - second,
                    self.min_margin,
                )
            }
            [] => Detection::UND,
        }
    }
}

/// A loaded engine and how long it took to load.
#[derive(Clone)]
pub struct LoadedEngine {
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// Time spent loading it.
    pub load_time: Duration,
}

/// The engines a replica serves with, one per [`EngineKind`].
#[derive(Clone)]
pub struct Engines {
    whatlang: LoadedEngine,
    lingua: LoadedEngine,
    /// Time each engine's warm-up took (whatlang, lingua), once warmed.
    warm_up: [Duration; 2],
}

impl Engines {
    /// Groups one engine of each kind.
    pub fn new(whatlang: LoadedEngine, lingua: LoadedEngine) -> Result<Self, EngineError> {
        for (want, got) in [
            (EngineKind::Whatlang, &whatlang),
            (EngineKind::Lingua, &lingua),
        ] {
            if got.engine.kind() != want {
                return Err(EngineError::WrongKind {
                    slot: want,
                    got: got.engine.kind(),
                });
            }
        }
        Ok(Self {
            whatlang,
            lingua,
            warm_up: [Duration::ZERO; 2],
        })
    }

    /// Records how long each engine's warm-up took (the longest over the
    /// engine threads: what readiness waited for).
    pub fn set_warm_up_time(&mut self, kind: EngineKind, took: Duration) {
        self.warm_up[kind.index()] = took;
    }

    /// How long `kind`'s warm-up took (zero before it ran).
    pub fn warm_up_time(&self, kind: EngineKind) -> Duration {
        self.warm_up[kind.index()]
    }

    /// The engine of a kind.
    pub fn get(&self, kind: EngineKind) -> &Arc<dyn Engine> {
        match kind {
            EngineKind::Whatlang => &self.whatlang.engine,
            EngineKind::Lingua => &self.lingua.engine,
        }
    }

    /// Every engine with its load time.
    pub fn loaded(&self) -> [&LoadedEngine; 2] {
        [&self.whatlang, &self.lingua]
    }
}

/// Why engines could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An engine was put in the slot of another kind.
    #[error("engine {got} given where {slot} was expected")]
    WrongKind { slot: EngineKind, got: EngineKind },
    /// The loader failed.
    #[error("loading engines failed: {0}")]
    Load(String),
}

/// Readies the engines at startup. Runs on the blocking pool; readiness stays
/// NOT_SERVING until it returns. Tests inject slow or failing loaders.
pub trait EngineLoader: Send + Sync + 'static {
    /// Loads both engines.
    fn load(&self) -> Result<Engines, EngineError>;
}

/// Loads the real whatlang and lingua engines.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealEngines;

impl EngineLoader for RealEngines {
    fn load(&self) -> Result<Engines, EngineError> {
        let started = Instant::now();
        let whatlang: Arc<dyn Engine> = Arc::new(WhatlangEngine::new());
        let whatlang = LoadedEngine {
            engine: whatlang,
            load_time: started.elapsed(),
        };
        let started = Instant::now();
        let lingua: Arc<dyn Engine> = Arc::new(LinguaEngine::load());
        let lingua = LoadedEngine {
            engine: lingua,
            load_time: started.elapsed(),
        };
        Engines::new(whatlang, lingua)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_round_trips_through_both_engines_mappings() {
        for lang in Language::ALL {
            assert_eq!(Language::from_whatlang(lang.to_whatlang()), Some(lang));
            assert_eq!(Language::from_lingua(lang.to_lingua()), Some(lang));
            assert_eq!(lang.to_lingua().iso_code_639_1().to_string(), lang.code());
        }
    }

    #[test]
    fn engine_names_parse_and_reject_unknown_ones() {
        assert_eq!("lingua".parse::<EngineKind>(), Ok(EngineKind::Lingua));
        assert_eq!("whatlang".parse::<EngineKind>(), Ok(EngineKind::Whatlang));
        assert!("cld3".parse::<EngineKind>().is_err());
    }

    #[test]
    fn whatlang_answers_und_for_text_without_letters() {
        let d = WhatlangEngine::new().detect("1234 5678 !!!");
        assert_eq!(d, Detection::UND);
    }

    #[test]
    fn und_when_the_first_choice_does_not_lead_by_more_than_the_margin() {
        let en = Some(Language::English);
        assert_eq!(Detection::judged(en, 0.4, 0.0, 0.0), Detection::UND);
        assert_eq!(Detection::judged(en, 0.4, 0.02, 0.02), Detection::UND);
        assert_eq!(Detection::judged(None, 0.9, 0.9, 0.0), Detection::UND);
        assert_eq!(
            Detection::judged(en, 1.5, 0.03, 0.02),
            Detection {
                language: en,
                confidence: 1.0
            }
        );
    }

    #[test]
    fn whatlangs_unreliable_answer_is_und_and_a_clear_one_is_kept() {
        // whatlang leads with Portuguese by 0.011 here: a guess.
        let text = "Zero downtime deployments with Kubernetes";
        assert_eq!(WhatlangEngine::new().detect(text), Detection::UND);
        let guess = WhatlangEngine::with_min_margin(0.0).detect(text);
        assert_eq!(guess.language, Some(Language::Portuguese));
        let clear = WhatlangEngine::new().detect("Das Essen ist in zehn Minuten fertig.");
        assert_eq!(clear.language, Some(Language::German));
    }

    #[test]
    fn lingua_answers_und_for_text_without_letters_only() {
        let lingua = LinguaEngine::load();
        assert_eq!(lingua.detect("1234 5678 !!!"), Detection::UND);
        // The closest call on the evaluation set is still answered.
        let close = lingua.detect("Il a plu tout le week-end.");
        assert_eq!(close.language, Some(Language::French));
        assert!(close.confidence > 0.0 && close.confidence <= 1.0);
    }
}
