//! OFREP, the OpenFeature Remote Evaluation Protocol, on the admin listener:
//! `POST /ofrep/v1/evaluate/flags/{key}` evaluates one flag and `POST
//! /ofrep/v1/evaluate/flags` every flag, for `{"context": {...}}`, against
//! this replica's live flag set with the same evaluator requests use. So
//! "what would user X get on this pod?" has a standard answer that any
//! OpenFeature SDK's OFREP provider can ask: the replica's `track`,
//! `version` and `pod` are added to the context where it does not set
//! them (a Detect call's context always has them), so the answer is the
//! one a Detect call with the same attributes gets.
//!
//! Shapes follow the protocol's OpenAPI (open-feature/protocol
//! `service/openapi.yaml`): a success carries `key`, `reason`, `variant`,
//! `value` (absent when the caller's code default applies) and `metadata`;
//! a missing flag is 404 `FLAG_NOT_FOUND`; other evaluation errors and bad
//! requests are 400 with an `errorCode`. Bulk answers carry an `ETag`, a
//! hash of the answer, and a matching `If-None-Match` gets 304.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use crate::flags::store::FlagStore;
use crate::flags::{Context, ErrorCode, Resolution};

/// The largest request body accepted (a context is small; this bounds what a
/// client can make the replica buffer).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the OFREP routes evaluate with.
#[derive(Clone)]
struct Evaluator {
    store: Arc<FlagStore>,
    /// The replica's attributes (`track`, `version`, `pod`), added where a
    /// context does not set them.
    replica: Arc<[(String, String)]>,
}

impl Evaluator {
    fn context(&self, ctx: Context) -> Context {
        ctx.with_defaults(self.replica.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// The OFREP routes, evaluating `store`'s current set for contexts
/// completed with `replica`'s attributes.
pub fn router(store: Arc<FlagStore>, replica: Arc<[(String, String)]>) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(single))
        .route("/ofrep/v1/evaluate/flags", post(bulk))
        .with_state(Evaluator { store, replica })
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A whole-request failure: 400 (or `status`) with `errorCode` and details.
fn failure(status: StatusCode, key: Option<&str>, code: &str, details: &str) -> Response {
    let mut body = Map::new();
    if let Some(key) = key {
        body.insert("key".into(), json!(key));
    }
    body.insert("errorCode".into(), json!(code));
    body.insert("errorDetails".into(), json!(details));
    json_response(status, &Value::Object(body))
}

/// Reads `{"context": {...}}` from a bounded body. The context may be
/// absent or null (evaluated with no attributes).
async fn read_context(body: Body) -> Result<Context, Response> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                "INVALID_CONTEXT",
                &format!("the request body is over {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let bad = |details: String| failure(StatusCode::BAD_REQUEST, None, "INVALID_CONTEXT", &details);
    let request: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("the request body is not JSON: {e}")))?
    };
    let context = match request {
        Value::Object(mut map) => map.remove("context").unwrap_or(Value::Null),
        other => {
            return Err(bad(format!(
                "the request body must be a JSON object, got {other}"
            )));
        }
    };
    let context = match context {
        Value::Null => Value::Object(Map::new()),
        Value::Object(map) => {
            if let Some(key) = map.get("targetingKey")
                && !key.is_string()
            {
                return Err(bad(format!("targetingKey must be a string, got {key}")));
            }
            Value::Object(map)
        }
        other => return Err(bad(format!("context must be a JSON object, got {other}"))),
    };
    Context::from_json(context).map_err(bad)
}

/// One evaluation in OFREP's shape, with the HTTP status a single
/// evaluation answers with.
fn evaluation(key: &str, r: &Resolution<'_>) -> (StatusCode, Value) {
    let mut body = Map::new();
    body.insert("key".into(), json!(key));
    match r.error {
        Some(code) => {
            body.insert("errorCode".into(), json!(code.as_str()));
            body.insert("errorDetails".into(), json!(details(key, code)));
            if code != ErrorCode::FlagNotFound {
                body.insert("metadata".into(), Value::Object(r.metadata.clone()));
            }
            let status = if code == ErrorCode::FlagNotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, Value::Object(body))
        }
        None => {
            body.insert("reason".into(), json!(r.reason.as_str()));
            if let Some(variant) = r.variant {
                body.insert("variant".into(), json!(variant));
            }
            // No value: the caller's code default (OFREP's codeDefaultFlag).
            if let Some(value) = r.value {
                body.insert("value".into(), value.clone());
            }
            body.insert("metadata".into(), Value::Object(r.metadata.clone()));
            (StatusCode::OK, Value::Object(body))
        }
    }
}

fn details(key: &str, code: ErrorCode) -> String {
    match code {
        ErrorCode::FlagNotFound => format!("flag `{key}` was not found"),
        ErrorCode::ParseError => format!("flag `{key}`: its targeting rule cannot be evaluated"),
        ErrorCode::TypeMismatch => format!("flag `{key}`: the variant is of another type"),
        ErrorCode::General => format!("flag `{key}`: targeting chose a variant the flag lacks"),
    }
}

async fn single(
    State(evaluator): State<Evaluator>,
    Path(key): Path<String>,
    body: Body,
) -> Response {
    let ctx = match read_context(body).await {
        Ok(ctx) => evaluator.context(ctx),
        Err(response) => return response,
    };
    let set = evaluator.store.current();
    let (status, body) = evaluation(&key, &set.evaluate(&key, &ctx));
    json_response(status, &body)
}

/// The bulk ETag: a hash of the answer itself. The same answer gets the
/// same tag whichever replica behind a Service gives it, and a reload, a
/// context or a replica (a canary's `track`) that changes any value,
/// variant, reason or metadata gets another.
fn etag(answer: &str) -> String {
    let sources = [(String::new(), answer.as_bytes().to_vec())];
    format!("\"{}\"", crate::flags::definition::revision(&sources))
}

async fn bulk(State(evaluator): State<Evaluator>, headers: HeaderMap, body: Body) -> Response {
    let ctx = match read_context(body).await {
        Ok(ctx) => evaluator.context(ctx),
        Err(response) => return response,
    };
    let set = evaluator.store.current();
    let flags: Vec<Value> = set
        .keys()
        .into_iter()
        .map(|key| evaluation(key, &set.evaluate(key, &ctx)).1)
        .collect();
    let answer = json!({ "flags": flags }).to_string();
    let tag = etag(&answer);
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            let v = v.trim();
            v == "*" || v == tag || v.strip_prefix("W/") == Some(tag.as_str())
        });
    let etag_header = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_header),
        ],
        answer,
    )
        .into_response()
}
