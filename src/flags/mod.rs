//! Feature flags in flagd's format, evaluated in-process.
//!
//! A [`FlagSet`] is an immutable, compiled set of flags; [`store::FlagStore`]
//! holds the current one and swaps in a new one atomically when the source
//! (a mounted ConfigMap) changes, keeping the last good set when the new
//! content is bad. Evaluation never fails a request: on any error the
//! caller's default is served and the reason says why.

pub mod cbor;
pub mod definition;
pub mod murmur;
pub mod rule;
pub mod semver;
pub mod store;

use std::time::{SystemTime, UNIX_EPOCH};

use foldhash::{HashMap, HashMapExt};
use serde_json::{Map, Value};

use rule::{Env, Rule};

/// The flags compiled into the binary, served when no `--flags` is given.
pub const BUILT_IN: &str = include_str!("../../flags/flags.json");

/// Whether a flag is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagState {
    Enabled,
    Disabled,
}

/// One compiled flag.
#[derive(Debug, Clone)]
pub struct Flag {
    pub key: String,
    pub state: FlagState,
    /// Variants sorted by name (serde_json's map without `preserve_order`).
    pub variants: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    /// Index of the default variant in `variants`; `None` when the flag has
    /// no default variant (then the caller's code default is served).
    default: Option<usize>,
    targeting: Option<Rule>,
    /// The flag's metadata merged over its file's flag-set metadata (a flag's
    /// key wins), as flagd reports it.
    pub metadata: Map<String, Value>,
}

/// How `fractional` turns its bucketing value into a hash (one setting for
/// the whole flag set, `flags.fractional_version`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum FractionalVersion {
    /// MurmurHash3 of the string key (the shorthand hashes flag key and
    /// targeting key concatenated): what flagd's core does today.
    #[default]
    V2,
    /// MurmurHash3 of the deterministic CBOR encoding of the bucketing value,
    /// any JSON type (flagd's "fractional-non-string-rand-units" design; the
    /// shorthand hashes `[flagKey, targetingKey]`).
    V3,
}

impl FractionalVersion {
    /// The setting's name (`v2`, `v3`).
    pub fn as_str(self) -> &'static str {
        match self {
            FractionalVersion::V2 => "v2",
            FractionalVersion::V3 => "v3",
        }
    }
}

/// An immutable, compiled flag set.
#[derive(Debug, Clone)]
pub struct FlagSet {
    flags: HashMap<String, Flag>,
    /// Content hash of the sources it was built from.
    pub revision: String,
    /// Problems flagd tolerates at load time, found while compiling.
    warnings: Vec<definition::DefinitionWarning>,
    /// The bucketing of `fractional`.
    fractional: FractionalVersion,
}

/// The type a caller asks a flag for (OpenFeature's typed evaluation): a
/// variant of another type is a `TYPE_MISMATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlagType {
    Boolean,
    String,
    Integer,
    Float,
    Object,
}

impl FlagType {
    /// Whether `value` is of this type (a float flag takes any number, as
    /// flagd's providers do; an integer flag only whole numbers).
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            FlagType::Boolean => value.is_boolean(),
            FlagType::String => value.is_string(),
            FlagType::Integer => value.is_i64(),
            FlagType::Float => value.is_number(),
            FlagType::Object => value.is_object() || value.is_array(),
        }
    }
}

/// Why a value was served, as flagd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Static,
    TargetingMatch,
    Default,
    Disabled,
    Error,
}

impl Reason {
    /// flagd's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

/// What went wrong, as flagd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    FlagNotFound,
    TypeMismatch,
    ParseError,
    General,
}

/// Metadata of a flag that has none (and of a flag that is not found).
static NO_METADATA: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl ErrorCode {
    /// flagd's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// The result of evaluating one flag: `value` is `None` when the caller's
/// code default applies (disabled flag or error).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<'a> {
    pub value: Option<&'a Value>,
    pub variant: Option<&'a str>,
    pub reason: Reason,
    pub error: Option<ErrorCode>,
    /// The flag's merged metadata (empty for a flag that is not found).
    pub metadata: &'a Map<String, Value>,
}

/// The evaluation context: `targetingKey` plus attributes, in flagd's shape.
#[derive(Debug, Clone, Default)]
pub struct Context {
    data: Value,
}

impl Context {
    /// A context with `targeting_key` and `attributes`.
    pub fn new(targeting_key: Option<&str>, attributes: Map<String, Value>) -> Self {
        let mut map = attributes;
        if let Some(key) = targeting_key {
            map.insert("targetingKey".into(), Value::String(key.to_owned()));
        }
        Self {
            data: Value::Object(map),
        }
    }

    /// Adds the string `attributes` this context does not set: a caller's
    /// own values win.
    pub fn with_defaults<'a>(
        mut self,
        attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        if let Value::Object(map) = &mut self.data {
            for (name, value) in attributes {
                if !map.contains_key(name) {
                    map.insert(name.to_owned(), Value::String(value.to_owned()));
                }
            }
        }
        self
    }

    /// A context from flagd-shaped JSON (`{"targetingKey": "alice", ...}`).
    pub fn from_json(value: Value) -> Result<Self, String> {
        match value {
            Value::Object(_) => Ok(Self { data: value }),
            other => Err(format!("the context must be a JSON object, got {other}")),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FlagSet {
    /// Parses and compiles one flag file's content (used for the built-in
    /// flags and by tests).
    pub fn parse(name: &str, content: &str) -> Result<Self, definition::DefinitionErrors> {
        let parsed = definition::parse_file(name, content.as_bytes())?;
        let revision = definition::revision(&[(name.to_owned(), content.as_bytes().to_vec())]);
        Ok(definition::merge(vec![parsed], revision))
    }

    /// The built-in flags, with the configured defaults as the default
    /// variants of `detector-engine` and `max-text-chars` (so
    /// `--default-engine` and `--max-text-chars` work without a flag source).
    pub fn built_in(default_engine: &str, max_text_chars: usize) -> Self {
        // The file's own bytes when the settings agree with its defaults, so
        // the built-in set reports the revision `flags/flags.json` reports
        // when served from a file or a ConfigMap.
        let content = serde_json::from_str::<Value>(BUILT_IN)
            .ok()
            .and_then(|mut doc| {
                let mut changed = false;
                if let Some(engine) = doc.pointer_mut("/flags/detector-engine/defaultVariant")
                    && engine.as_str() != Some(default_engine)
                {
                    *engine = Value::String(default_engine.to_owned());
                    changed = true;
                }
                if let Some(limit) = doc.pointer_mut("/flags/max-text-chars/variants/default")
                    && limit.as_u64() != Some(max_text_chars as u64)
                {
                    *limit = Value::from(max_text_chars);
                    changed = true;
                }
                changed.then(|| doc.to_string())
            })
            .unwrap_or_else(|| BUILT_IN.to_owned());
        match Self::parse("built-in flags.json", &content) {
            Ok(set) => set,
            // The built-in file is checked by a unit test; an empty set (every
            // flag FLAG_NOT_FOUND, code defaults served) is the safe fallback.
            Err(e) => {
                tracing::error!(error = %e, "built-in flags are invalid");
                Self {
                    flags: HashMap::new(),
                    revision: "invalid".into(),
                    warnings: Vec::new(),
                    fractional: FractionalVersion::default(),
                }
            }
        }
    }

    /// The flag `key`, if the set has it.
    pub fn flag(&self, key: &str) -> Option<&Flag> {
        self.flags.get(key)
    }

    /// Whether any enabled flag has a targeting rule: without one, every
    /// evaluation ignores the context, so callers need not build it.
    pub fn uses_context(&self) -> bool {
        self.flags
            .values()
            .any(|f| f.state == FlagState::Enabled && f.targeting.is_some())
    }

    /// Flag keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.flags.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// The bucketing `fractional` uses in this set.
    pub fn fractional_version(&self) -> FractionalVersion {
        self.fractional
    }

    /// This set with `version` bucketing for `fractional`.
    #[must_use]
    pub fn with_fractional_version(mut self, version: FractionalVersion) -> Self {
        self.fractional = version;
        self
    }

    /// Problems flagd tolerates that were found at load (each names its file,
    /// flag and rule).
    pub fn warnings(&self) -> &[definition::DefinitionWarning] {
        &self.warnings
    }

    /// Evaluates `key` for `ctx`, whatever the variant's type.
    pub fn evaluate<'a>(&'a self, key: &str, ctx: &Context) -> Resolution<'a> {
        let Some(flag) = self.flags.get(key) else {
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Error,
                error: Some(ErrorCode::FlagNotFound),
                metadata: &NO_METADATA,
            };
        };
        let metadata = &flag.metadata;
        let error = |code| Resolution {
            value: None,
            variant: None,
            reason: Reason::Error,
            error: Some(code),
            metadata,
        };
        if flag.state == FlagState::Disabled {
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Disabled,
                error: None,
                metadata,
            };
        }
        // No default variant: the caller's code default, reason DEFAULT.
        let default = |reason| match flag.default {
            Some(i) => {
                let (name, value) = &flag.variants[i];
                Resolution {
                    value: Some(value),
                    variant: Some(name.as_str()),
                    reason,
                    error: None,
                    metadata,
                }
            }
            None => Resolution {
                value: None,
                variant: None,
                reason: Reason::Default,
                error: None,
                metadata,
            },
        };
        let Some(rule) = &flag.targeting else {
            return default(Reason::Static);
        };
        let env = Env {
            data: &ctx.data,
            flag_key: &flag.key,
            timestamp: if rule.needs_time() { now() } else { 0 },
            fractional: self.fractional,
        };
        let chosen = match rule.evaluate(&env) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(flag = %key, error = %e, "targeting failed");
                return error(ErrorCode::ParseError);
            }
        };
        // A rule's result names a variant: a string, or a boolean or number
        // in its JSON spelling (as flagd's evaluators do); null means "no
        // match", the default variant.
        let number;
        let name: &str = match chosen.as_ref() {
            Value::String(s) => s,
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            Value::Null => return default(Reason::Default),
            Value::Number(n) => {
                number = n.to_string();
                &number
            }
            _ => return error(ErrorCode::General),
        };
        match flag.index.get(name) {
            Some(&i) => {
                let (name, value) = &flag.variants[i];
                Resolution {
                    value: Some(value),
                    variant: Some(name.as_str()),
                    reason: Reason::TargetingMatch,
                    error: None,
                    metadata,
                }
            }
            None => {
                tracing::debug!(flag = %key, variant = name, "targeting chose a variant the flag does not have");
                error(ErrorCode::General)
            }
        }
    }

    /// Evaluates `key` for `ctx` as a `kind` flag: a variant of another type
    /// is an error, `TYPE_MISMATCH` (the caller's default is served).
    pub fn evaluate_as<'a>(&'a self, key: &str, ctx: &Context, kind: FlagType) -> Resolution<'a> {
        let resolution = self.evaluate(key, ctx);
        match resolution.value {
            Some(value) if !kind.accepts(value) => Resolution {
                value: None,
                variant: None,
                reason: Reason::Error,
                error: Some(ErrorCode::TypeMismatch),
                metadata: resolution.metadata,
            },
            _ => resolution,
        }
    }

    /// Evaluates a string flag; the caller's `default` on any error.
    pub fn string<'a>(&'a self, key: &str, ctx: &Context, default: &'a str) -> Typed<'a, &'a str> {
        self.typed(key, ctx, default, Value::as_str)
    }

    /// Evaluates an integer flag; the caller's `default` on any error.
    pub fn integer<'a>(&'a self, key: &str, ctx: &Context, default: i64) -> Typed<'a, i64> {
        self.typed(key, ctx, default, Value::as_i64)
    }

    fn typed<'a, T: Copy>(
        &'a self,
        key: &str,
        ctx: &Context,
        default: T,
        convert: impl Fn(&'a Value) -> Option<T>,
    ) -> Typed<'a, T> {
        let resolution = self.evaluate(key, ctx);
        match resolution.value.map(&convert) {
            Some(Some(value)) => Typed {
                value,
                variant: resolution.variant,
                reason: resolution.reason,
                error: None,
            },
            Some(None) => Typed {
                value: default,
                variant: None,
                reason: Reason::Error,
                error: Some(ErrorCode::TypeMismatch),
            },
            None => Typed {
                value: default,
                variant: None,
                reason: resolution.reason,
                error: resolution.error,
            },
        }
    }
}

/// A typed evaluation result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Typed<'a, T> {
    pub value: T,
    pub variant: Option<&'a str>,
    pub reason: Reason,
    pub error: Option<ErrorCode>,
}

#[cfg(test)]
mod tests;
