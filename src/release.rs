//! The decisions the release machinery drives, read from the feature flags
//! for each request: which engine answers (`detector-engine`: an A/B test is
//! a fractional rule), which candidate runs dark (`dark-launch-engine`), and
//! the live input limit (`max-text-chars`, the kill switch for oversized
//! traffic), and which fault to inject (`fault-injection`, to rehearse a
//! rollback). Canary and shadow releases happen around this, in the mesh.

use crate::configuration::DetectorSettings;
use crate::engine::EngineKind;
use crate::fault::{self, FaultSpec};
use crate::flags::{Context, ErrorCode, FlagSet, Reason};

/// The flag that picks the engine that answers.
pub const ENGINE_FLAG: &str = "detector-engine";
/// The flag that picks a dark-launch candidate ("off" for none).
pub const DARK_LAUNCH_FLAG: &str = "dark-launch-engine";
/// The flag that sets the input limit in characters.
pub const MAX_TEXT_CHARS_FLAG: &str = "max-text-chars";

/// The flag that injects faults into Detect and DetectStream calls.
pub const FAULT_FLAG: &str = fault::FLAG;

/// Everything decided for one request, from one flag set (variant names are
/// borrowed from it: nothing is allocated per request).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'a> {
    /// The engine that answers.
    pub engine: EngineKind,
    /// The `detector-engine` variant served (None when the code default was).
    pub engine_variant: Option<&'a str>,
    /// Why that engine.
    pub engine_reason: Reason,
    /// A candidate to run dark, if any.
    pub dark_launch: Option<EngineKind>,
    /// The input limit.
    pub max_text_chars: usize,
    /// Flag errors met while deciding (each served the code default).
    pub errors: Vec<(&'static str, ErrorCode)>,
    /// Each flag evaluated: (flag, variant served, reason), for metrics.
    pub evaluations: [Evaluation<'a>; 3],
}

/// Decides for `ctx` with `flags`; the configured defaults serve whenever a
/// flag is missing, disabled or broken.
pub fn decide<'a>(flags: &'a FlagSet, ctx: &Context, defaults: &DetectorSettings) -> Decision<'a> {
    let mut errors = Vec::new();

    let engine = flags.string(ENGINE_FLAG, ctx, defaults.default_engine.as_str());
    errors.extend(engine.error.map(|e| (ENGINE_FLAG, e)));
    let (kind, engine_variant, engine_reason) = match engine.value.parse::<EngineKind>() {
        Ok(kind) => (kind, engine.variant, engine.reason),
        Err(_) => {
            errors.push((ENGINE_FLAG, ErrorCode::TypeMismatch));
            (defaults.default_engine, None, Reason::Error)
        }
    };

    let dark = flags.string(DARK_LAUNCH_FLAG, ctx, "off");
    errors.extend(
        dark.error
            .filter(|e| *e != ErrorCode::FlagNotFound)
            .map(|e| (DARK_LAUNCH_FLAG, e)),
    );
    let dark_evaluation = (DARK_LAUNCH_FLAG, dark.variant, dark.reason);
    let dark_launch = match dark.value {
        "off" => None,
        other => match other.parse::<EngineKind>() {
            Ok(kind) => Some(kind),
            Err(_) => {
                errors.push((DARK_LAUNCH_FLAG, ErrorCode::TypeMismatch));
                None
            }
        },
    };

    let default_limit = i64::try_from(defaults.max_text_chars).unwrap_or(i64::MAX);
    let limit = flags.integer(MAX_TEXT_CHARS_FLAG, ctx, default_limit);
    errors.extend(
        limit
            .error
            .filter(|e| *e != ErrorCode::FlagNotFound)
            .map(|e| (MAX_TEXT_CHARS_FLAG, e)),
    );
    let limit_evaluation = (MAX_TEXT_CHARS_FLAG, limit.variant, limit.reason);
    let max_text_chars = match usize::try_from(limit.value) {
        Ok(n) if n >= 1 => n,
        _ => {
            errors.push((MAX_TEXT_CHARS_FLAG, ErrorCode::TypeMismatch));
            defaults.max_text_chars
        }
    };

    Decision {
        engine: kind,
        evaluations: [
            (ENGINE_FLAG, engine_variant, engine_reason),
            dark_evaluation,
            limit_evaluation,
        ],
        engine_variant,
        engine_reason,
        dark_launch,
        max_text_chars,
        errors,
    }
}

/// One flag evaluation, for `switchyard_flag_evaluations_total`: the flag,
/// the variant served (borrowed from the flag set), the reason.
pub type Evaluation<'a> = (&'static str, Option<&'a str>, Reason);

/// The fault to inject into one call, from the same flag set and context as
/// [`decide`], and the evaluation for metrics (`None` when the flag is not
/// defined: most flag sets do not have it, and the metric would only grow).
/// A missing, disabled or broken flag injects nothing.
pub fn fault<'a>(flags: &'a FlagSet, ctx: &Context) -> (Option<FaultSpec>, Option<Evaluation<'a>>) {
    let resolution = flags.evaluate(FAULT_FLAG, ctx);
    if resolution.error == Some(ErrorCode::FlagNotFound) {
        return (None, None);
    }
    // Variants were checked when the set loaded, so this parse cannot fail.
    let spec = resolution
        .value
        .and_then(|value| FaultSpec::parse(value).ok().flatten());
    (
        spec,
        Some((FAULT_FLAG, resolution.variant, resolution.reason)),
    )
}
