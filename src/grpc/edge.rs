//! The request-edge layer in front of every gRPC service.
//!
//! - A client deadline (`grpc-timeout`) ends the call with DEADLINE_EXCEEDED.
//!   tonic enforces the header itself but answers CANCELLED; this layer sits
//!   inside tonic's and fires a few milliseconds earlier, so callers get the
//!   code the gRPC spec prescribes. The handler's future is dropped: no
//!   further work starts for the call.
//! - A request message above the decode limit is reported as
//!   RESOURCE_EXHAUSTED (the gRPC spec's code) rather than tonic's
//!   OUT_OF_RANGE.
//! - Shadow traffic is decided here, once: a mirrored copy (Envoy and Istio
//!   before 1.28 append `-shadow` to the authority of the copies a mirror
//!   policy sends) or any request on a `--track shadow` replica gets the
//!   [`Shadow`] extension, and metrics and the domain count it apart.
//! - Every RPC is observed (see [`super::observe`]): RED metrics, a server
//!   span whose parent comes from the incoming W3C or B3 headers, and one
//!   access log line.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

use super::catalog::MethodTable;
use super::observe::{Completion, CountingBody, GRPC_STATUS, status_in};
use crate::telemetry::Tracing;

/// How much earlier than tonic's own timer this layer's deadline fires.
const DEADLINE_MARGIN: Duration = Duration::from_millis(3);

/// Request extension: this request is shadow traffic (a mirrored copy, or
/// served on the shadow track); its reply goes nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shadow;

/// Whether an authority is a mirror's: its host ends in `-shadow`.
pub fn is_mirrored_authority(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.ends_with("-shadow")
}

/// What the edge needs to observe RPCs.
#[derive(Debug)]
pub struct Observer {
    /// Every served method and its series.
    pub methods: MethodTable,
    /// This replica serves the shadow track: all its traffic is shadow.
    pub shadow_track: bool,
    /// Where the RPC spans go.
    pub tracing: Tracing,
}

/// Adds [`Edge`] to a service.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    observer: Arc<Observer>,
}

impl EdgeLayer {
    pub fn new(observer: Observer) -> Self {
        Self {
            observer: Arc::new(observer),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            observer: Arc::clone(&self.observer),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    observer: Arc<Observer>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for Edge<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let shadow = self.observer.shadow_track
            || parts
                .uri
                .authority()
                .is_some_and(|a| is_mirrored_authority(a.as_str()));
        if shadow {
            parts.extensions.insert(Shadow);
        }
        let method = Arc::clone(self.observer.methods.get(parts.uri.path()));
        let span = self
            .observer
            .tracing
            .server_span(&method, &parts.headers, shadow);
        if span.trace.has_span() {
            parts.extensions.insert(span.trace.clone());
        }
        let log_span = span.log.clone();
        let completion = Completion::start(method, shadow, span);
        let (received, sent) = completion.message_counters();
        let body = Body::new(CountingBody::request(
            body,
            received,
            completion.request_broke_off(),
        ));
        let req = http::Request::from_parts(parts, body);

        let deadline = grpc_timeout(req.headers());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = inner.call(req).instrument(log_span);
        Box::pin(async move {
            let response = match deadline {
                Some(timeout) => {
                    match tokio::time::timeout(timeout.saturating_sub(DEADLINE_MARGIN), future)
                        .await
                    {
                        Ok(response) => response?,
                        Err(_) => {
                            Status::deadline_exceeded(format!("deadline of {timeout:?} exceeded"))
                                .into_http()
                        }
                    }
                }
                None => future.await?,
            };
            // A trailers-only response (an error status) ends here.
            if let Some(code) = status_in(response.headers()) {
                let (response, code) = remap_too_large(response, code);
                completion.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(CountingBody::response(body, sent, completion))))
        })
    }
}

// Parsed once: a lookup by `&str` parses the name every time.
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Parses the `grpc-timeout` header (`<up to 8 digits><H|M|S|m|u|n>`).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// tonic reports an over-size request message as OUT_OF_RANGE; the gRPC spec
/// says RESOURCE_EXHAUSTED. Only that message is rewritten: Switchyard's own
/// handlers never answer OUT_OF_RANGE. `code` is the trailers-only
/// response's status; the rewritten response and its code come back.
fn remap_too_large<B>(
    mut response: http::Response<B>,
    code: tonic::Code,
) -> (http::Response<B>, tonic::Code) {
    if code != tonic::Code::OutOfRange {
        return (response, code);
    }
    let headers = response.headers_mut();
    let is_too_large = headers
        .get(&GRPC_MESSAGE)
        .is_some_and(|m| contains(m.as_bytes(), b"message%20length%20too%20large"));
    if !is_too_large {
        return (response, code);
    }
    headers.insert(GRPC_STATUS.clone(), HeaderValue::from_static("8"));
    (response, tonic::Code::ResourceExhausted)
}

/// Whether a streaming request's inbound error is the over-size one, and if
/// so the status to end the stream with.
pub fn inbound_status(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "grpc-timeout",
            HeaderValue::from_str(v).expect("valid header"),
        );
        h
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(
            grpc_timeout(&headers("2H")),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(grpc_timeout(&headers("3M")), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(&headers("4S")), Some(Duration::from_secs(4)));
        assert_eq!(
            grpc_timeout(&headers("250m")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(grpc_timeout(&headers("7u")), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout(&headers("9n")), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "S", "12", "1x", "123456789S", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(&headers(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn mirrored_authorities_end_in_shadow() {
        for yes in [
            "switchyard-shadow",
            "switchyard.ns.svc-shadow:50051",
            "a-shadow:80",
        ] {
            assert!(is_mirrored_authority(yes), "{yes}");
        }
        for no in [
            "switchyard",
            "shadow.example:50051",
            "a-shadowy:80",
            "127.0.0.1:50051",
        ] {
            assert!(!is_mirrored_authority(no), "{no}");
        }
    }

    #[test]
    fn only_the_too_large_out_of_range_is_remapped() {
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
        )
        .into_http::<()>();
        let (remapped, code) = remap_too_large(too_large, tonic::Code::OutOfRange);
        assert_eq!(remapped.headers()["grpc-status"], "8");
        assert_eq!(code, tonic::Code::ResourceExhausted);

        let other = Status::out_of_range("something else").into_http::<()>();
        let (other, code) = remap_too_large(other, tonic::Code::OutOfRange);
        assert_eq!(other.headers()["grpc-status"], "11");
        assert_eq!(code, tonic::Code::OutOfRange);

        // Another status is left as it is, message and all.
        let internal = Status::internal("message length too large").into_http::<()>();
        let (internal, code) = remap_too_large(internal, tonic::Code::Internal);
        assert_eq!(internal.headers()["grpc-status"], "13");
        assert_eq!(code, tonic::Code::Internal);
    }
}
