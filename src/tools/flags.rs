//! `switchyard flags validate|eval`: flag files checked and evaluated
//! offline, with the evaluator `serve` uses, so a CI job can gate a
//! ConfigMap change before it reaches a pod.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::exit::{Exit, report};
use crate::flags::store::load_path;
use crate::flags::{Context, FlagType, FractionalVersion};

/// `switchyard flags ...`.
#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Check flag files: one line per error (file, flag, problem) and exit 1;
    /// load-time warnings (problems flagd tolerates) are listed apart and
    /// keep exit 0.
    Validate {
        /// Files or directories (as `serve --flags` reads them).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Evaluate flags for a context and print JSON (value, variant, reason,
    /// errorCode, metadata); exit 1 when a result is an error (such as
    /// FLAG_NOT_FOUND or TYPE_MISMATCH).
    Eval {
        /// A file or directory.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// One flag; without it, every flag, keyed by flag key.
        #[arg(long, value_name = "KEY")]
        flag: Option<String>,
        /// The evaluation context in flagd's shape, e.g. '{"targetingKey": "alice"}'.
        #[arg(long, value_name = "JSON", default_value = "{}")]
        context: String,
        /// Evaluate as this type (OpenFeature's typed evaluation): a variant
        /// of another type is a TYPE_MISMATCH. Without it, any type.
        #[arg(long = "type", value_name = "TYPE", value_enum)]
        kind: Option<FlagType>,
        /// How `fractional` buckets, as `serve --fractional-version`.
        #[arg(long, value_name = "VERSION", value_enum, default_value = "v2")]
        fractional_version: FractionalVersion,
    },
}

/// Runs `switchyard flags ...`, writing results to `out` and problems to
/// `err`: 0 valid/evaluated (warnings allowed), 1 invalid flags or an
/// evaluation that is an error, 2 bad usage (such as a context that is not a
/// JSON object).
pub fn run(command: &FlagsCommand, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    match command {
        FlagsCommand::Validate { paths } => {
            let mut exit = Exit::Ok;
            for path in paths {
                match load_path(path, FractionalVersion::default()) {
                    Ok(set) => {
                        let warnings = set.warnings();
                        let _ = writeln!(
                            out,
                            "ok: {} ({} flags, revision {}, {} warnings)",
                            path.display(),
                            set.keys().len(),
                            set.revision,
                            warnings.len()
                        );
                        for w in warnings {
                            let _ = writeln!(err, "warning: {w}");
                        }
                    }
                    Err(errors) => {
                        exit = Exit::Failed;
                        for e in errors.0 {
                            let _ = writeln!(err, "{e}");
                        }
                    }
                }
            }
            exit
        }
        FlagsCommand::Eval {
            path,
            flag,
            context,
            kind,
            fractional_version,
        } => {
            let ctx = match serde_json::from_str::<Value>(context)
                .map_err(|e| e.to_string())
                .and_then(Context::from_json)
            {
                Ok(ctx) => ctx,
                Err(e) => return report(err, Exit::Usage, &format!("invalid --context: {e}")),
            };
            let set = match load_path(path, *fractional_version) {
                Ok(set) => set,
                Err(errors) => {
                    for e in errors.0 {
                        let _ = writeln!(err, "{e}");
                    }
                    return Exit::Failed;
                }
            };
            let mut failed = false;
            let mut one = |key: &str| {
                let r = match kind {
                    Some(kind) => set.evaluate_as(key, &ctx, *kind),
                    None => set.evaluate(key, &ctx),
                };
                let mut obj = Map::new();
                obj.insert("key".into(), json!(key));
                obj.insert("value".into(), r.value.cloned().unwrap_or(Value::Null));
                obj.insert(
                    "variant".into(),
                    r.variant.map_or(Value::Null, |v| json!(v)),
                );
                obj.insert("reason".into(), json!(r.reason.as_str()));
                if let Some(e) = r.error {
                    failed = true;
                    obj.insert("errorCode".into(), json!(e.as_str()));
                }
                obj.insert("metadata".into(), Value::Object(r.metadata.clone()));
                Value::Object(obj)
            };
            let result = match flag {
                Some(key) => one(key),
                None => Value::Object(
                    set.keys()
                        .into_iter()
                        .map(|k| (k.to_owned(), one(k)))
                        .collect(),
                ),
            };
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            Exit::ok_if(!failed)
        }
    }
}
