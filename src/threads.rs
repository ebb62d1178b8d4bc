//! Which threads run what, and at which CPU priority: the data plane at a
//! lower priority, the kubelet's probes and the admin listener on a control
//! thread of their own at the default one.
//!
//! - **The data plane** is the Tokio runtime that serves the gRPC listener
//!   ([`data_plane_runtime`]) and the engine pool's threads: they run at
//!   nice [`DATA_PLANE_NICE`] ([`lower_to_data_plane`]).
//! - **The control thread** ([`ControlThread`]) runs a one-thread Tokio
//!   runtime at the default priority (nice 0) that serves the probe
//!   listener (`server.probe_addr`: `grpc.health.v1.Health` only, behind
//!   the same edge as the main listener) and the admin HTTP listener.
//!
//! Why. Detect is CPU-bound: under saturation every data-plane thread is
//! runnable, and a health check that shares those threads waits for the
//! next I/O poll. Earlier, every lingua call yielded once before it ran so
//! that the workers polled for I/O between detections; that bounded
//! Health/Check p99 at 0.7–4 ms but cost 5–10 % of lingua's short-text
//! throughput (2.86 system calls per Detect against a bare server's 0.92)
//! and no yield schedule got both (BENCHMARKS.md, "Engine turns" and
//! "Where the yield's cost goes"). Here the kubelet's probes do not share
//! the data plane's threads, and Linux's scheduler gives a woken nice-0
//! thread the CPU ahead of nice-10 ones: under lingua saturation without
//! the yield, Health/Check p99 on the probe listener was 0.20 ms with the
//! data plane at nice 10, 0.82 ms at nice 5 and 3.4 ms (the kernel's time
//! slice) at nice 0. Lowering a thread's priority needs no privilege.
//!
//! Nice values order the threads of one container (one cgroup); they do
//! not take CPU from other containers of the pod (the Istio sidecar) or
//! from other pods, whose shares the cgroups decide.

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;

/// The data plane's nice value: low enough that a woken nice-0 control
/// thread runs at once (at nice 10 a runnable nice-0 thread weighs ~10
/// times as much), without starving anything at the default priority.
pub const DATA_PLANE_NICE: i32 = 10;

/// Sets the calling thread's nice value to [`DATA_PLANE_NICE`]. Absolute,
/// not an increment: a thread started by a data-plane thread inherits its
/// nice value, and setting it again changes nothing. Linux keeps the nice
/// value per thread. A failure is logged, not fatal: the service works at
/// any priority.
pub fn lower_to_data_plane() {
    if let Err(e) = rustix::process::setpriority_process(None, DATA_PLANE_NICE) {
        tracing::debug!(error = %e, "cannot lower the thread's priority");
    }
}

/// The runtime that serves the data plane: Tokio's multi-thread runtime
/// (one worker per core), every thread it starts (workers and its
/// blocking pool) at [`DATA_PLANE_NICE`].
pub fn data_plane_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(lower_to_data_plane)
        .build()
}

/// The control thread: a one-thread Tokio runtime on an OS thread of its
/// own, at the nice value of the thread that starts it (start it from the
/// thread that drives the application, not a data-plane worker).
pub struct ControlThread {
    done: oneshot::Receiver<()>,
}

impl ControlThread {
    /// Starts the thread and runs `work` on its runtime. `work` is built on
    /// that runtime (by `make`), so the listeners it registers are polled
    /// by the control thread, not by the data plane's I/O driver.
    pub fn start<F, W>(make: F) -> std::io::Result<Self>
    where
        F: FnOnce() -> W + Send + 'static,
        W: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (finished, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                match rustix::process::getpriority_process(None) {
                    Ok(nice) if nice > 0 => tracing::warn!(
                        nice,
                        "the control thread was started at a lowered priority: \
                         probes may wait behind Detect under load"
                    ),
                    _ => {}
                }
                runtime.block_on(async move { make().await });
                let _ = finished.send(());
            })?;
        Ok(Self { done })
    }

    /// Waits until the thread's work has ended, at most `deadline`; returns
    /// whether it ended. The thread is not joined: it ends on its own once
    /// its work does, and a process that exits does not wait for it.
    pub async fn stopped(self, deadline: Duration) -> bool {
        matches!(tokio::time::timeout(deadline, self.done).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_plane_runtime_lowers_its_threads_and_only_them() {
        let before = rustix::process::getpriority_process(None).expect("getpriority");
        let runtime = data_plane_runtime().expect("runtime");
        let on_worker =
            runtime
                .block_on(runtime.spawn(async {
                    rustix::process::getpriority_process(None).expect("getpriority")
                }))
                .expect("task");
        let on_blocking = runtime
            .block_on(runtime.spawn_blocking(|| {
                rustix::process::getpriority_process(None).expect("getpriority")
            }))
            .expect("task");
        assert_eq!(on_worker, DATA_PLANE_NICE.max(before));
        assert_eq!(on_blocking, DATA_PLANE_NICE.max(before));
        assert_eq!(
            rustix::process::getpriority_process(None).expect("getpriority"),
            before,
            "the thread that built the runtime keeps its priority"
        );
    }

    #[test]
    fn lowering_twice_is_not_lowering_further() {
        std::thread::spawn(|| {
            lower_to_data_plane();
            lower_to_data_plane();
            assert_eq!(
                rustix::process::getpriority_process(None).expect("getpriority"),
                DATA_PLANE_NICE
            );
        })
        .join()
        .expect("thread");
    }
}
