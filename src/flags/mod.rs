//! Feature flags in flagd's format, evaluated in-process.
//!
//! A [`FlagSet`] is an immutable, compiled set of flags; [`store::FlagStore`]
//! holds the current one and swaps in a new one atomically when the source
//! (a mounted ConfigMap) changes, keeping the last good set when the new
//! content is bad. Evaluation never fails a request: on any error the
//! caller's default is served and the reason says why.

pub mod definition;
pub mod murmur;
pub mod rule;
pub mod semver;
pub mod store;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Variants in definition order.
    pub variants: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    /// Index of the default variant in `variants`.
    default: usize,
    targeting: Option<Rule>,
    pub metadata: Option<Value>,
}

/// An immutable, compiled flag set.
#[derive(Debug, Clone)]
pub struct FlagSet {
    flags: HashMap<String, Flag>,
    /// Content hash of the sources it was built from.
    pub revision: String,
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

    /// A context from flagd-shaped JSON (`{"targetingKey": "alice", ...}`).
    pub fn from_json(value: Value) -> Result<Self, String> {
        match value {
            Value::Object(_) => Ok(Self { data: value }),
            other => Err(format!("the context must be a JSON object, got {other}")),
        }
    }

    /// The context as JSON.
    pub fn as_json(&self) -> &Value {
        &self.data
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
        let content = serde_json::from_str::<Value>(BUILT_IN)
            .map(|mut doc| {
                if let Some(engine) = doc.pointer_mut("/flags/detector-engine/defaultVariant") {
                    *engine = Value::String(default_engine.to_owned());
                }
                if let Some(limit) = doc.pointer_mut("/flags/max-text-chars/variants/default") {
                    *limit = Value::from(max_text_chars);
                }
                doc.to_string()
            })
            .unwrap_or_else(|_| BUILT_IN.to_owned());
        match Self::parse("built-in flags.json", &content) {
            Ok(set) => set,
            // The built-in file is checked by a unit test; an empty set (every
            // flag FLAG_NOT_FOUND, code defaults served) is the safe fallback.
            Err(e) => {
                tracing::error!(error = %e, "built-in flags are invalid");
                Self {
                    flags: HashMap::new(),
                    revision: "invalid".into(),
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

    /// Evaluates `key` for `ctx`.
    pub fn evaluate<'a>(&'a self, key: &str, ctx: &Context) -> Resolution<'a> {
        let Some(flag) = self.flags.get(key) else {
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Error,
                error: Some(ErrorCode::FlagNotFound),
            };
        };
        if flag.state == FlagState::Disabled {
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Disabled,
                error: None,
            };
        }
        let default = |reason| {
            let (name, value) = &flag.variants[flag.default];
            Resolution {
                value: Some(value),
                variant: Some(name.as_str()),
                reason,
                error: None,
            }
        };
        let Some(rule) = &flag.targeting else {
            return default(Reason::Static);
        };
        let env = Env {
            data: &ctx.data,
            flag_key: &flag.key,
            timestamp: if rule.needs_time() { now() } else { 0 },
        };
        let chosen = match rule.evaluate(&env) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(flag = %key, error = %e, "targeting failed");
                return Resolution {
                    value: None,
                    variant: None,
                    reason: Reason::Error,
                    error: Some(ErrorCode::General),
                };
            }
        };
        let name: &str = match chosen.as_ref() {
            Value::String(s) => s,
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            _ => return default(Reason::Default),
        };
        match flag.index.get(name) {
            Some(&i) => {
                let (name, value) = &flag.variants[i];
                Resolution {
                    value: Some(value),
                    variant: Some(name.as_str()),
                    reason: Reason::TargetingMatch,
                    error: None,
                }
            }
            None => default(Reason::Default),
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
