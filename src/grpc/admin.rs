//! `switchyard.v1.Admin`: what this replica is and how it is configured.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::pb;
use crate::configuration::Settings;
use crate::detection::DetectionService;
use crate::engine::Language;
use crate::health::HealthState;

/// The Admin service.
pub struct AdminService {
    settings: Arc<Settings>,
    health: HealthState,
    detection: Arc<DetectionService>,
    started: Instant,
}

impl AdminService {
    /// Reports on a replica started at `started`.
    pub fn new(
        settings: Arc<Settings>,
        health: HealthState,
        detection: Arc<DetectionService>,
        started: Instant,
    ) -> Self {
        Self {
            settings,
            health,
            detection,
            started,
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
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(pb::Info {
            version: crate::VERSION.to_owned(),
            git_commit: crate::GIT_COMMIT.to_owned(),
            track: self.settings.deployment.track.as_str().to_owned(),
            pod: self.settings.deployment.pod.clone(),
            namespace: self.settings.deployment.namespace.clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            engines,
            health: self.health.snapshot().into_iter().collect(),
            effective_config_json: self.settings.to_json(),
            draining: self.health.is_draining(),
        }))
    }
}
