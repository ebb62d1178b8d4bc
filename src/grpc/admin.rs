//! `switchyard.v1.Admin`: what this replica is and how it is configured.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::catalog::Received;
use super::detector::ContextHeaders;
use super::pb;
use crate::configuration::Settings;
use crate::dark_launch::DarkLauncher;
use crate::detection::DetectionService;
use crate::engine::Language;
use crate::flags;
use crate::flags::store::FlagStore;
use crate::health::HealthState;

const EVALUATE_FLAGS: &str = "switchyard.v1.Admin/EvaluateFlags";

/// The Admin service: reports what its sources say.
pub struct AdminService {
    sources: AdminSources,
    /// The metadata EvaluateFlags exposes to targeting, as Detect does.
    context_headers: ContextHeaders,
}

/// What GetInfo and EvaluateFlags read, each from its owner.
pub struct AdminSources {
    pub settings: Arc<Settings>,
    pub health: HealthState,
    /// Engines, flag errors and the flag evaluation context.
    pub detection: Arc<DetectionService>,
    pub flags: Arc<FlagStore>,
    pub dark: Arc<DarkLauncher>,
    /// The Detector's request messages.
    pub traffic: Received,
    /// When the replica started.
    pub started: Instant,
}

impl AdminService {
    /// Reports what `sources` say.
    pub fn new(sources: AdminSources) -> Self {
        let context_headers = ContextHeaders::new(&sources.settings.flags.headers());
        Self {
            sources,
            context_headers,
        }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn get_info(
        &self,
        _request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::Info>, Status> {
        let languages: Vec<String> = Language::ALL.iter().map(|l| l.code().to_owned()).collect();
        let engines = self
            .sources
            .detection
            .engines()
            .map(|engines| {
                engines
                    .loaded()
                    .iter()
                    .map(|loaded| pb::EngineInfo {
                        name: loaded.engine.kind().as_str().to_owned(),
                        load_seconds: loaded.load_time.as_secs_f64(),
                        languages: languages.clone(),
                        warm_up_seconds: engines.warm_up_time(loaded.engine.kind()).as_secs_f64(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(pb::Info {
            version: self.sources.settings.deployment.version.clone(),
            build_version: crate::VERSION.to_owned(),
            git_commit: crate::GIT_COMMIT.to_owned(),
            track: self.sources.settings.deployment.track.as_str().to_owned(),
            pod: self.sources.settings.deployment.pod.clone(),
            namespace: self.sources.settings.deployment.namespace.clone(),
            uptime_seconds: self.sources.started.elapsed().as_secs_f64(),
            engines,
            health: self.sources.health.snapshot().into_iter().collect(),
            effective_config_json: self.sources.settings.to_json(),
            draining: self.sources.health.is_draining(),
            flags: Some(self.flags_info()),
            dark_launch: Some(self.dark_launch_info()),
            traffic: Some(pb::TrafficInfo {
                requests: self.sources.traffic.real(),
                shadow: self.sources.traffic.shadow(),
            }),
        }))
    }

    async fn evaluate_flags(
        &self,
        request: Request<pb::EvaluateFlagsRequest>,
    ) -> Result<Response<pb::EvaluateFlagsResponse>, Status> {
        let from_metadata =
            super::detector::context(request.metadata(), EVALUATE_FLAGS, &self.context_headers);
        let ctx = match request.into_inner().context {
            Some(given) => {
                let attributes = given
                    .attributes
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                let key = Some(given.targeting_key).filter(|k| !k.is_empty());
                let given = flags::Context::new(key.as_deref(), attributes);
                self.sources.detection.on_this_replica(given)
            }
            None => self.sources.detection.flag_context(&from_metadata),
        };
        let set = self.sources.flags.current();
        let flags = set
            .keys()
            .into_iter()
            .map(|key| {
                let r = set.evaluate(key, &ctx);
                pb::FlagEvaluation {
                    key: key.to_owned(),
                    value_json: r.value.map(ToString::to_string).unwrap_or_default(),
                    variant: r.variant.unwrap_or_default().to_owned(),
                    reason: r.reason.as_str().to_owned(),
                    error_code: r.error.map(|e| e.as_str().to_owned()).unwrap_or_default(),
                    metadata_json: serde_json::Value::Object(r.metadata.clone()).to_string(),
                }
            })
            .collect();
        Ok(Response::new(pb::EvaluateFlagsResponse {
            revision: set.revision.clone(),
            flags,
        }))
    }
}

impl AdminService {
    fn flags_info(&self) -> pb::FlagsInfo {
        let store = &self.sources.flags;
        let status = store.status();
        pb::FlagsInfo {
            source: status.source,
            revision: status.revision,
            loaded_at: humantime::format_rfc3339_millis(status.loaded_at).to_string(),
            last_error: status.last_error.unwrap_or_default(),
            reloads_ok: status.reloads_ok,
            reloads_failed: status.reloads_failed,
            evaluation_errors: self.sources.detection.flag_errors().get(),
            keys: store
                .current()
                .keys()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }

    fn dark_launch_info(&self) -> pb::DarkLaunchInfo {
        let c = self.sources.dark.stats().counts();
        let compared = c.matched + c.mismatched;
        let mean = |micros: u64| {
            if compared == 0 {
                0.0
            } else {
                micros as f64 / compared as f64 / 1e6
            }
        };
        pb::DarkLaunchInfo {
            matched: c.matched,
            mismatched: c.mismatched,
            skipped: c.skipped,
            timed_out: c.timed_out,
            errors: c.errors,
            mean_candidate_seconds: mean(c.candidate_micros),
            mean_served_seconds: mean(c.served_micros),
        }
    }
}
