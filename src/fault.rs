//! Fault injection by flag: the `fault-injection` flag makes a share of
//! Detect and DetectStream calls fail with a chosen gRPC code or wait before
//! they are served, so a team can rehearse an automatic rollback or test an
//! alert without breaking anything. Health and Admin are never touched: the
//! hook sits on the detection path only ([`crate::detection`]).
//!
//! A variant is `null` or `"off"` (nothing injected) or an object:
//!
//! ```json
//! {"abort": {"code": "UNAVAILABLE", "percent": 20}, "delay": {"ms": 200, "percent": 10}}
//! ```
//!
//! `abort.code` is a gRPC code name as the gRPC spec writes it (`UNAVAILABLE`,
//! `INTERNAL`, ...; not `OK`), `delay.ms` is 1..=10000, each `percent` is
//! 0..=100 (fractions allowed). Either part may be left out, not both; no other
//! key is allowed. The two draws are independent per request, as Istio's
//! fault filter does: a delayed call can also be aborted, after its delay.
//! Variants are checked when flags load ([`FaultSpec::parse`], called by the
//! flag compiler), so a bad value refuses the whole flag set and the last good
//! set keeps serving.
//!
//! Every injected fault is counted in `switchyard_faults_injected_total`
//! (`kind` = `abort` | `delay`, `code` = the gRPC-Go name for aborts, empty
//! for delays) and logged at most once a second, with the number of faults
//! since the previous line.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use serde_json::Value;

use prometheus_client::registry::Registry;

use crate::metrics::code_name;

/// The flag's key.
pub const FLAG: &str = "fault-injection";

/// The longest delay a variant may ask for. Longer tests nothing a shorter one
/// does not, and a delayed call must still finish inside the drain budget
/// (`drain.timeout`, 20 s in the manifests).
pub const MAX_DELAY_MS: u64 = 10_000;

/// How often a fault is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// What one variant injects.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// Fail the call with `code` in `percent` % of calls.
    pub abort: Option<Abort>,
    /// Hold the call for `delay` in `percent` % of calls.
    pub delay: Option<Delay>,
}

/// The abort part of a variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Abort {
    pub code: tonic::Code,
    pub percent: f64,
}

/// The delay part of a variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    pub duration: Duration,
    pub percent: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    abort: Option<RawAbort>,
    delay: Option<RawDelay>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbort {
    code: String,
    percent: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelay {
    ms: u64,
    percent: f64,
}

fn percent(value: f64, part: &str) -> Result<f64, String> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "`{part}.percent` must be between 0 and 100, got {value}"
        ))
    }
}

/// The gRPC code named `name` as the gRPC spec writes it (`UNAVAILABLE`).
fn parse_code(name: &str) -> Option<tonic::Code> {
    (0..=16)
        .map(tonic::Code::from_i32)
        .find(|code| crate::grpc::codes::name(*code) == name)
}

impl FaultSpec {
    /// Reads a variant's value: `Ok(None)` for `null` and `"off"` (nothing to
    /// inject), an error that says what is wrong for anything else that is
    /// not a valid object.
    pub fn parse(value: &Value) -> Result<Option<FaultSpec>, String> {
        match value {
            Value::Null => return Ok(None),
            Value::String(s) if s == "off" => return Ok(None),
            Value::Object(_) => {}
            other => {
                return Err(format!(
                    "a fault variant is null, \"off\" or an object like {{\"abort\": {{\"code\": \"UNAVAILABLE\", \"percent\": 5}}}}, got {other}"
                ));
            }
        }
        let raw = RawSpec::deserialize(value).map_err(|e| format!("bad fault variant: {e}"))?;
        if raw.abort.is_none() && raw.delay.is_none() {
            return Err(
                "a fault variant needs `abort` or `delay` (use null or \"off\" for none)".into(),
            );
        }
        let abort = match raw.abort {
            None => None,
            Some(a) => {
                let code = parse_code(&a.code)
                    .filter(|c| *c != tonic::Code::Ok)
                    .ok_or_else(|| {
                        format!(
                            "`abort.code` must be a gRPC code name other than OK (e.g. UNAVAILABLE, INTERNAL), got {:?}",
                            a.code
                        )
                    })?;
                Some(Abort {
                    code,
                    percent: percent(a.percent, "abort")?,
                })
            }
        };
        let delay = match raw.delay {
            None => None,
            Some(d) => {
                if !(1..=MAX_DELAY_MS).contains(&d.ms) {
                    return Err(format!(
                        "`delay.ms` must be between 1 and {MAX_DELAY_MS}, got {}",
                        d.ms
                    ));
                }
                Some(Delay {
                    duration: Duration::from_millis(d.ms),
                    percent: percent(d.percent, "delay")?,
                })
            }
        };
        Ok(Some(FaultSpec { abort, delay }))
    }
}

/// An injected abort: the call fails with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fault injected by flag `fault-injection`: {}", crate::grpc::codes::name(*.code))]
pub struct Injected {
    pub code: tonic::Code,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FaultLabels {
    kind: &'static str,
    code: &'static str,
}

/// Applies fault variants to calls: draws, waits, counts, logs.
#[derive(Debug)]
pub struct FaultInjector {
    injected: Family<FaultLabels, Counter>,
    /// When the last fault was logged; faults since then.
    last_log: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl FaultInjector {
    /// An injector whose counter is registered on `own` (the `switchyard_`
    /// sub-registry).
    pub fn new(own: &mut Registry) -> Self {
        let injected = Family::<FaultLabels, Counter>::default();
        own.register(
            "faults_injected",
            "Faults injected by the fault-injection flag, by kind (abort, delay) and gRPC code (aborts)",
            injected.clone(),
        );
        Self {
            injected,
            last_log: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Injects what `spec` asks for this call: waits for a drawn delay, then
    /// returns the drawn abort, if any.
    pub async fn apply(&self, spec: Option<&FaultSpec>) -> Result<(), Injected> {
        let Some(spec) = spec else {
            return Ok(());
        };
        if let Some(delay) = spec.delay.filter(|d| drawn(d.percent)) {
            self.record("delay", "");
            tokio::time::sleep(delay.duration).await;
        }
        match spec.abort.filter(|a| drawn(a.percent)) {
            Some(abort) => {
                self.record("abort", code_name(abort.code));
                Err(Injected { code: abort.code })
            }
            None => Ok(()),
        }
    }

    fn record(&self, kind: &'static str, code: &'static str) {
        self.injected
            .get_or_create(&FaultLabels { kind, code })
            .inc();
        let since = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .last_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.unlogged.fetch_sub(since, Ordering::Relaxed);
        tracing::warn!(
            kind,
            code,
            faults_since_last_line = since,
            "fault injected by flag fault-injection (logged at most once a second)"
        );
    }
}

/// True in `percent` % of draws.
fn drawn(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && fastrand::f64() * 100.0 < percent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn off_and_null_inject_nothing() {
        assert_eq!(FaultSpec::parse(&Value::Null), Ok(None));
        assert_eq!(FaultSpec::parse(&json!("off")), Ok(None));
    }

    #[test]
    fn the_documented_shape_parses() {
        let spec = FaultSpec::parse(&json!({
            "abort": {"code": "UNAVAILABLE", "percent": 20},
            "delay": {"ms": 200, "percent": 10.5}
        }))
        .expect("valid")
        .expect("a fault");
        assert_eq!(
            spec.abort,
            Some(Abort {
                code: tonic::Code::Unavailable,
                percent: 20.0
            })
        );
        assert_eq!(
            spec.delay,
            Some(Delay {
                duration: Duration::from_millis(200),
                percent: 10.5
            })
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let cases = [
            (json!("on"), "null, \"off\" or an object"),
            (json!(5), "null, \"off\" or an object"),
            (json!({}), "needs `abort` or `delay`"),
            (json!({"abort": {"code": "OK", "percent": 5}}), "abort.code"),
            (
                json!({"abort": {"code": "unavailable", "percent": 5}}),
                "abort.code",
            ),
            (
                json!({"abort": {"code": "UNAVAILABLE", "percent": 101}}),
                "abort.percent",
            ),
            (
                json!({"abort": {"code": "UNAVAILABLE", "percent": -1}}),
                "abort.percent",
            ),
            (json!({"abort": {"code": "UNAVAILABLE"}}), "percent"),
            (json!({"delay": {"ms": 0, "percent": 5}}), "delay.ms"),
            (json!({"delay": {"ms": 10_001, "percent": 5}}), "delay.ms"),
            (
                json!({"delay": {"ms": 200, "percent": 5, "jitter": 1}}),
                "jitter",
            ),
            (
                json!({"abort": {"code": "UNAVAILABLE", "percent": 5}, "drop": {}}),
                "drop",
            ),
        ];
        for (value, expected) in cases {
            let err = FaultSpec::parse(&value).expect_err(&value.to_string());
            assert!(
                err.contains(expected),
                "{value}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn draws_follow_the_percentages() {
        assert!(drawn(100.0));
        assert!(!drawn(0.0));
        let hits = (0..20_000).filter(|_| drawn(5.0)).count();
        // 1,000 expected; the bounds are more than 6 standard deviations away.
        assert!((800..1200).contains(&hits), "{hits} of 20000 at 5 %");
    }
}
