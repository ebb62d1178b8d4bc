//! Which threads run what, and at which CPU priority: the data plane (at a
//! lower priority if configured), the kubelet's probes and the admin
//! listener on a control thread of their own at the default one.
//!
//! - **The data plane** is the Tokio runtime that serves the gRPC listener
//!   ([`data_plane_runtime`]) and the engine pool's threads: they run at
//!   nice `server.data_plane_nice` ([`lower_to`]; default 0, the
//!   manifests' 10).
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
//! the data plane's threads: a probe waits for the kernel to schedule the
//! control thread, not for a busy worker to poll for I/O. Under lingua
//! saturation without the yield, Health/Check p99 on the probe listener
//! was 3.4 ms (the kernel's time slice) with every thread at nice 0, 0.82
//! ms with the data plane at nice 5 and 0.20 ms at nice 10, where Linux's
//! scheduler runs a woken nice-0 thread ahead of the busy ones (one-off
//! probes of 2026-12-02; the `peer` bench's figures are in BENCHMARKS.md,
//! "The probe listener"). Lowering a thread's priority needs no
//! privilege.
//!
//! Nice values order the threads of one container (one cgroup); they do
//! not take CPU from other containers of the pod (the Istio sidecar) or
//! from other pods, whose shares the cgroups decide. Outside a container
//! they order the data plane behind every other nice-0 program of the
//! machine, which is why the default leaves priorities alone.

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;

/// Sets the calling thread's nice value to `nice` (0 leaves it alone).
/// Absolute, not an increment: a thread started by a data-plane thread
/// inherits its nice value, and setting it again changes nothing. Linux
/// keeps the nice value per thread. A failure is logged, not fatal: the
/// service works at any priority.
pub fn lower_to(nice: i32) {
    if nice == 0 {
        return;
    }
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        tracing::debug!(error = %e, nice, "cannot lower the thread's priority");
    }
}

/// The runtime that serves the data plane: Tokio's multi-thread runtime
/// (one worker per core), every thread it starts (workers and its
/// blocking pool) at nice `nice` (`server.data_plane_nice`).
pub fn data_plane_runtime(nice: i32) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || lower_to(nice))
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
    /// by the control thread, not by the data plane's I/O driver. Returns
    /// once the runtime is built; an error if the thread or its runtime
    /// cannot be (the runtime is built and dropped on the thread itself,
    /// never inside the caller's async context).
    pub async fn start<F, W>(make: F) -> std::io::Result<Self>
    where
        F: FnOnce() -> W + Send + 'static,
        W: Future<Output = ()>,
    {
        let (built, runtime_built) = oneshot::channel();
        let (finished, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = built.send(Err(e));
                        return;
                    }
                };
                let _ = built.send(Ok(()));
                // The main thread's nice value is the process's (PRIO_PROCESS
                // of the thread-group id); this thread's is its own.
                let own = rustix::process::getpriority_process(None);
                let main = rustix::process::getpriority_process(Some(rustix::process::getpid()));
                if let (Ok(nice), Ok(main_nice)) = (own, main)
                    && nice > main_nice
                {
                    tracing::warn!(
                        nice,
                        main_nice,
                        "the control thread was started by a lowered thread: \
                         probes may wait behind Detect under load"
                    );
                }
                runtime.block_on(async move { make().await });
                let _ = finished.send(());
            })?;
        runtime_built
            .await
            .map_err(|_| std::io::Error::other("the control thread ended at its start"))??;
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
        let runtime = data_plane_runtime(10).expect("runtime");
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
        assert_eq!(on_worker, 10.max(before));
        assert_eq!(on_blocking, 10.max(before));
        assert_eq!(
            rustix::process::getpriority_process(None).expect("getpriority"),
            before,
            "the thread that built the runtime keeps its priority"
        );
    }

    #[test]
    fn the_control_thread_runs_at_its_starters_priority_and_says_when_its_work_ended() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (nice, ran) = oneshot::channel();
            let control = ControlThread::start(move || async move {
                let _ = nice.send(rustix::process::getpriority_process(None));
            })
            .await
            .expect("starts");
            let here = rustix::process::getpriority_process(None).expect("getpriority");
            assert_eq!(ran.await.expect("ran").expect("getpriority"), here);
            assert!(control.stopped(Duration::from_secs(5)).await, "ended");
            // The control: work that never ends is reported as not ended.
            let stuck = ControlThread::start(std::future::pending::<()>)
                .await
                .expect("starts");
            assert!(!stuck.stopped(Duration::from_millis(100)).await);
        });
    }

    #[test]
    fn lowering_twice_is_not_lowering_further_and_zero_changes_nothing() {
        std::thread::spawn(|| {
            let before = rustix::process::getpriority_process(None).expect("getpriority");
            lower_to(0);
            assert_eq!(
                rustix::process::getpriority_process(None).expect("getpriority"),
                before
            );
            lower_to(7);
            lower_to(7);
            assert_eq!(
                rustix::process::getpriority_process(None).expect("getpriority"),
                7
            );
        })
        .join()
        .expect("thread");
    }
}
