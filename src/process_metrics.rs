//! The conventional `process_*` metrics (the names every Prometheus client
//! library's process collector exports and dashboards expect), read from
//! `/proc/self` at scrape time through the `procfs` crate. prometheus-client
//! has no process collector, so this is one, registered on the
//! application's own registry.
//!
//! A series whose source cannot be read (no `/proc`, e.g. not Linux) is left
//! out of the scrape rather than reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::metrics::single;

/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_threads`, `process_start_time_seconds`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessCollector;

fn gauge_u64(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            if ticks > 0.0 {
                single(
                    &mut encoder,
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds",
                    MetricType::Counter,
                    ConstCounter::new((stat.utime + stat.stime) as f64 / ticks),
                )?;
                if let Ok(boot) = procfs::boot_time_secs() {
                    single(
                        &mut encoder,
                        "process_start_time_seconds",
                        "Start time of the process since unix epoch in seconds",
                        MetricType::Gauge,
                        ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks),
                    )?;
                }
            }
            single(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                MetricType::Gauge,
                gauge_u64(stat.rss.saturating_mul(procfs::page_size())),
            )?;
            single(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                MetricType::Gauge,
                gauge_u64(stat.vsize),
            )?;
            single(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process",
                MetricType::Gauge,
                ConstGauge::new(stat.num_threads),
            )?;
        }
        if let Ok(fds) = me.fd_count() {
            single(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                MetricType::Gauge,
                gauge_u64(fds as u64),
            )?;
        }
        if let Ok(limits) = me.limits() {
            let max = match limits.max_open_files.soft_limit {
                procfs::process::LimitValue::Value(n) => n,
                procfs::process::LimitValue::Unlimited => u64::MAX,
            };
            single(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                MetricType::Gauge,
                gauge_u64(max),
            )?;
        }
        Ok(())
    }
}
