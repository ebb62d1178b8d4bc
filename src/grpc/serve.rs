//! Serves the gRPC routes on the listener with hyper's HTTP/2 server and
//! owns the life of each connection: its maximum age with per-connection
//! jitter and grace (gRFC A9), keepalive, HTTP/2 limits, and the drain's
//! GOAWAY.
//!
//! Why not `tonic::transport::Server`, which has the same settings: in tonic
//! 0.14.9 one age applies to every connection (no jitter, so the clients of
//! a pod that started with them all reconnect at the same instant), and
//! when a grace is set its timer sleeps age + grace and then closes the
//! connection *without* the GOAWAY at the age (`connection_timeout_future`):
//! calls in flight are cut instead of finishing. The protocol work stays in
//! maintained crates (hyper's HTTP/2 server over h2, socket2 for TCP
//! keepalive); only the timers are ours.
//!
//! A connection's life: served until its age (±10 %), then GOAWAY (no new
//! streams; calls in flight finish), then closed when the grace passes or
//! its last stream ends. The drain's step 4 sends the same GOAWAY to every
//! connection at once and stops accepting; [`serve`] returns when the last
//! connection has closed.

use std::convert::Infallible;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use crate::configuration::ConnectionSettings;

/// What is served: the routes behind the edge layer, a service over tonic
/// bodies that never fails (errors are gRPC statuses in the response).
pub trait GrpcService:
    Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> GrpcService for S where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The jitter on each connection's age: ±10 %, as gRFC A9 prescribes.
const AGE_JITTER: f64 = 0.10;

/// Serves `service` on `listener` until `stop` is cancelled, then sends
/// GOAWAY to every connection and returns once all have closed.
pub async fn serve<S: GrpcService>(
    listener: TcpListener,
    service: S,
    settings: ConnectionSettings,
    stop: CancellationToken,
) {
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_list_size)
        .max_pending_accept_reset_streams(settings.max_pending_accept_reset_streams)
        .keep_alive_interval(settings.http2_keepalive_interval)
        .keep_alive_timeout(settings.http2_keepalive_timeout);
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was
                    // accepted: not fatal; pause so a full table cannot spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        configure(&stream, &settings);
        let age = settings.max_age.map(|age| jittered(age, fastrand::f64()));
        let connection = Connection {
            age,
            grace: settings.max_age_grace,
            stop: stop.clone(),
        };
        connections.spawn(connection.serve(http2.clone(), stream, service.clone()));
    }
    // Step 4: the listener closes here; every connection got the GOAWAY.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// `age` moved by up to ±`AGE_JITTER`; `unit` is uniform in [0, 1).
pub fn jittered(age: Duration, unit: f64) -> Duration {
    age.mul_f64(1.0 + AGE_JITTER * (2.0 * unit - 1.0))
}

fn configure(stream: &TcpStream, settings: &ConnectionSettings) {
    // Small replies must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    if let Some(idle) = settings.tcp_keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(error = %e, "cannot set TCP keepalive");
        }
    }
}

/// One accepted connection's timers.
struct Connection {
    /// When to send GOAWAY (already jittered); None: never.
    age: Option<Duration>,
    /// How long after the age GOAWAY the connection may live.
    grace: Option<Duration>,
    /// The drain's step 4.
    stop: CancellationToken,
}

impl Connection {
    async fn serve<S: GrpcService>(
        self,
        http2: hyper::server::conn::http2::Builder<TokioExecutor>,
        stream: TcpStream,
        service: S,
    ) {
        let hyper_service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                service.clone().oneshot(request.map(Body::new))
            });
        let connection = http2.serve_connection(TokioIo::new(stream), hyper_service);
        tokio::pin!(connection);
        let aged = sleep_or_never(self.age);
        tokio::pin!(aged);
        let mut graced = Box::pin(sleep_or_never(None));
        let (mut going_away, mut draining) = (false, false);
        loop {
            tokio::select! {
                result = &mut connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = &mut aged, if !going_away && !draining => {
                    going_away = true;
                    tracing::debug!("connection reached its maximum age: GOAWAY");
                    connection.as_mut().graceful_shutdown();
                    graced = Box::pin(sleep_or_never(self.grace));
                }
                () = self.stop.cancelled(), if !draining => {
                    draining = true;
                    if !going_away {
                        connection.as_mut().graceful_shutdown();
                    }
                }
                () = &mut graced => {
                    tracing::debug!("connection age grace passed: closing");
                    return;
                }
            }
        }
    }
}

async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_jitter_is_ten_percent_either_way() {
        let age = Duration::from_secs(100);
        assert_eq!(jittered(age, 0.0), Duration::from_secs(90));
        assert_eq!(jittered(age, 0.5), Duration::from_secs(100));
        let top = jittered(age, 0.999_999);
        assert!(top < Duration::from_secs(110) && top > Duration::from_millis(109_999));
    }
}
