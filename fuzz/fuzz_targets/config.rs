//! Configuration loading: arbitrary `key=value` lines, each key taken from
//! the settings' own keys (by its position modulo their count) and given
//! as a command-line override or as `SWITCHYARD__` environment, every value
//! checked by the same code. A bad value must be an error, never a panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use switchyard::configuration::{Overrides, Settings};

const KEYS: [&str; 24] = [
    "server.grpc_addr",
    "server.admin_addr",
    "server.max_concurrent_requests",
    "server.max_decoding_message_size",
    "drain.delay",
    "drain.timeout",
    "deployment.track",
    "deployment.version",
    "deployment.pod",
    "detector.default_engine",
    "detector.max_text_chars",
    "health.liveness_stall_threshold",
    "health.ready_file",
    "log.level",
    "log.format",
    "telemetry.otlp_endpoint",
    "flags.poll_interval",
    "flags.debounce",
    "flags.context_headers",
    "dark_launch.max_in_flight",
    "dark_launch.timeout",
    "connection.max_age",
    "connection.http2_keepalive_timeout",
    "connection.max_header_list_size",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut values = Vec::new();
    let mut env = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let key = KEYS[i % KEYS.len()];
        if line.starts_with('$') {
            let name = format!(
                "SWITCHYARD__{}",
                key.replace('.', "__").to_ascii_uppercase()
            );
            env.insert(name, line[1..].to_owned());
        } else {
            values.push((key, line.to_owned()));
        }
    }
    let _ = Settings::load(
        &env,
        &Overrides {
            config_file: None,
            values,
        },
    );
});
