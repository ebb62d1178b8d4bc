//! The one decision the release machinery drives: which engine answers.
//!
//! Today it reads the configured default. Feature flags (A/B splits, kill
//! switches) replace its inside without changing its callers; canary and
//! shadow releases happen around it, in the mesh.

use crate::configuration::DetectorSettings;
use crate::detection::RequestContext;
use crate::engine::EngineKind;

/// The engine that answers `ctx`.
pub fn choose_engine(_ctx: &RequestContext, settings: &DetectorSettings) -> EngineKind {
    settings.default_engine
}
