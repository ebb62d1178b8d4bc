//! The README's examples work as printed. Its offline shell examples run
//! against the real binary on its built-in defaults, and the outputs it
//! shows are what the commands print, so the README cannot drift from the
//! binary.
//!
//! The README marks what this runs with HTML comments (invisible when
//! rendered) on the line before a fence:
//! - `<!-- readme-test: run -->`: every command in the next `sh` block runs
//!   and must exit 0;
//! - `<!-- readme-test: output of "NEEDLE" -->`: the next block is what the
//!   run command containing NEEDLE prints;
//! - `<!-- readme-test: output of $ COMMAND -->`: the next block is what
//!   COMMAND prints.
//!
//! A `json` output block must equal the output to the letter; a plain block
//! must have its shape (the same lines, each starting with the same two
//! words), since it shows values from a cluster. `localhost:50051` (the
//! built-in gRPC address, checked below) is replaced with the test server's
//! port-0 address.

use std::path::Path;
use std::process::Command;

use switchyard::configuration::Settings;

use crate::kube;
use crate::process::{BIN, Server};

const MARK: &str = "<!-- readme-test: ";
const README_ADDR: &str = "localhost:50051";

/// A fenced block of the README.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    text: String,
    /// The `readme-test` comment right before the fence, if any.
    mark: Option<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    let mut previous: Option<&str> = None;
    while let Some((i, line)) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let mut text = String::new();
            for (_, inner) in lines.by_ref() {
                if inner.starts_with("```") {
                    break;
                }
                text.push_str(inner);
                text.push('\n');
            }
            let mark = previous
                .and_then(|p| p.strip_prefix(MARK))
                .and_then(|p| p.strip_suffix(" -->"))
                .map(str::to_owned);
            blocks.push(Block {
                line: i + 1,
                lang: lang.trim().to_owned(),
                text,
                mark,
            });
            previous = None;
        } else {
            previous = Some(line);
        }
    }
    blocks
}

/// The commands of a shell block: continuation lines joined, comments and
/// blank lines dropped.
fn commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// Runs `command` with bash as a person would after the README's PATH step:
/// the test's `switchyard` binary and the tools venv first on the PATH.
async fn run(command: &str, server: &Server) -> String {
    let command = command.replace(README_ADDR, &server.grpc.to_string());
    let bin_dir = Path::new(BIN).parent().expect("binary dir").to_path_buf();
    let tools_dir = kube::venv_tool("SWITCHYARD_GRPCURL", "grpcurl")
        .parent()
        .expect("venv bin")
        .to_path_buf();
    let path = std::env::join_paths(
        [bin_dir, tools_dir]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .expect("PATH");
    let shown = command.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-c", &format!("set -euo pipefail; {command}")])
            .current_dir(root())
            .env("PATH", path)
            .output()
    })
    .await
    .expect("no panic")
    .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "README command failed ({}): {shown}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A printed JSON line equals the shown one, numbers within 1e-9 relative
/// (lingua's confidence varies in its last digit from run to run).
fn same_line(printed: &str, shown: &str) -> bool {
    let number = |line: &str| {
        let (key, value) = line.split_once(": ")?;
        let value: f64 = value.trim_end_matches(',').parse().ok()?;
        Some((key.to_owned(), value))
    };
    match (number(printed), number(shown)) {
        (Some((pk, pv)), Some((sk, sv))) => pk == sk && (pv - sv).abs() <= 1e-9 * sv.abs().max(1.0),
        _ => printed == shown,
    }
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().take(2).collect()
}

#[tokio::test]
async fn the_readme_examples_print_what_the_readme_shows() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let blocks = blocks(&readme);
    assert_eq!(
        Settings::defaults()
            .expect("defaults")
            .server
            .grpc_addr
            .port(),
        50051,
        "the README's examples use the built-in gRPC port"
    );

    // Offline examples cannot slip in unmarked (a block that uses kubectl
    // needs a cluster).
    let offline = ["grpcurl -plaintext localhost:", "switchyard flags "];
    for block in blocks.iter().filter(|b| b.lang == "sh") {
        if offline.iter().any(|o| block.text.contains(o)) && !block.text.contains("kubectl") {
            assert_eq!(
                block.mark.as_deref(),
                Some("run"),
                "README.md:{}: an offline example block must be marked `{MARK}run -->`",
                block.line
            );
        }
    }

    // The built-in defaults; only the ports differ (port 0), and the pod
    // name is the one a shell without HOSTNAME exported gets.
    let server = Server::start_with_env(&[], &[("POD_NAME", "localhost")]);
    server.wait_ready().await;

    let mut ran: Vec<(String, String)> = Vec::new();
    for block in blocks.iter().filter(|b| b.mark.as_deref() == Some("run")) {
        assert_eq!(block.lang, "sh", "README.md:{}", block.line);
        for command in commands(&block.text) {
            let output = run(&command, &server).await;
            ran.push((command, output));
        }
    }
    assert!(ran.len() >= 8, "the README's examples: {ran:?}");

    let mut compared = 0;
    for block in &blocks {
        let Some(spec) = block
            .mark
            .as_deref()
            .and_then(|m| m.strip_prefix("output of "))
        else {
            continue;
        };
        let output = if let Some(command) = spec.strip_prefix("$ ") {
            run(command, &server).await
        } else {
            let needle = spec.trim_matches('"');
            ran.iter()
                .find(|(command, _)| command.contains(needle))
                .unwrap_or_else(|| {
                    panic!(
                        "README.md:{}: no example command contains {needle:?}",
                        block.line
                    )
                })
                .1
                .clone()
        };
        if block.lang == "json" {
            let printed: Vec<&str> = output.trim_end().lines().collect();
            let shown: Vec<&str> = block.text.trim_end().lines().collect();
            let same = printed.len() == shown.len()
                && printed.iter().zip(&shown).all(|(p, s)| same_line(p, s));
            assert!(
                same,
                "README.md:{}: the output shown is not what the command prints:\n{output}",
                block.line
            );
        } else {
            let shown: Vec<_> = block.text.lines().map(words).collect();
            let printed: Vec<_> = output.lines().map(words).collect();
            assert_eq!(
                printed, shown,
                "README.md:{}: the output's shape differs from what the command prints:\n{output}",
                block.line
            );
        }
        compared += 1;
    }
    assert!(compared >= 2, "output blocks compared: {compared}");
}

#[test]
fn the_readme_marks_are_read_as_written() {
    let readme = "text\n<!-- readme-test: run -->\n```sh\n# a comment\ngrpcurl a \\\n  b\n\nswitchyard x\n```\n```json\n{}\n```\n";
    let blocks = blocks(readme);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].mark.as_deref(), Some("run"));
    assert_eq!(blocks[0].line, 3);
    assert_eq!(commands(&blocks[0].text), ["grpcurl a  b", "switchyard x"]);
    assert_eq!(
        blocks[1].mark, None,
        "a mark applies to the next fence only"
    );
    assert_eq!(blocks[1].lang, "json");
}

/// The README's configuration table shows each setting's default as the
/// settings types define it (the table is documentation, not a second
/// source: this keeps it true).
#[test]
fn the_configuration_table_shows_the_defaults_of_the_settings_types() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration section");
    let mut checked = 0;
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(key), Some(default)) = (cells.get(1), cells.get(4)) else {
            continue;
        };
        let key = key.trim_matches('`');
        // Rows that describe their default in words ("host name") have no
        // value to compare.
        let Some(shown) = default.strip_prefix('`').and_then(|d| d.split('`').next()) else {
            continue;
        };
        let Some(expected) = Settings::default_of(key) else {
            continue;
        };
        assert_eq!(
            shown,
            expected.as_str(),
            "README's default for {key} is {default:?}; the settings say {expected}"
        );
        checked += 1;
    }
    assert!(
        checked >= 20,
        "only {checked} rows checked: is the table still there?"
    );
}

/// The "Accepted" column of the README's settings tables (Configuration
/// and Connections) states the bounds the settings enforce: each stated
/// bound is accepted, and the value just beyond it is refused.
#[test]
fn the_settings_tables_state_the_bounds_the_settings_enforce() {
    use std::collections::HashMap;
    use std::time::Duration;
    use switchyard::configuration::Overrides;

    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let load = |key: &str, value: &str| {
        let var = format!("SWITCHYARD__{}", key.replace('.', "__").to_uppercase());
        Settings::load(
            &HashMap::from([(var, value.to_owned())]),
            &Overrides::default(),
        )
    };
    let accepts = |key: &str, value: &str| {
        if let Err(e) = load(key, value) {
            panic!("README says {key} accepts {value}, but: {e}");
        }
    };
    let refuses = |key: &str, value: &str| {
        assert!(
            load(key, value).is_err(),
            "{key}={value} is beyond the README's bound but was accepted"
        );
    };
    // A duration as plain seconds, which the settings accept exactly.
    let secs = |d: Duration| format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
    let mut checked = 0;
    for title in ["## Configuration", "## Connections: age, keepalive, limits"] {
        let section = readme
            .split(title)
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap_or_else(|| panic!("a {title:?} section"));
        let header = section
            .lines()
            .find(|l| l.starts_with("| Setting |"))
            .expect("a settings table");
        assert!(
            header.ends_with("| Accepted |"),
            "{title}: the table's last column is Accepted"
        );
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let key = cells[1].trim_matches('`');
            let accepted = cells[cells.len() - 2];
            let spans: Vec<&str> = accepted.split('`').skip(1).step_by(2).collect();
            if let Some(rest) = accepted.strip_prefix("`off` or ") {
                accepts(key, "off");
                let spans: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
                check_range(key, &spans, &accepts, &refuses, &secs);
                checked += 1;
            } else if accepted.contains("`–`") {
                check_range(key, &spans, &accepts, &refuses, &secs);
                checked += 1;
            } else if let Some(rest) = accepted.strip_prefix("more than `0s`, at most ") {
                let max = rest.trim_matches('`');
                accepts(key, max);
                refuses(key, "0");
                let hi = humantime::parse_duration(max).expect("a duration");
                refuses(key, &secs(hi + Duration::from_millis(1)));
                checked += 1;
            } else if accepted.starts_with("at least `") {
                let min: u64 = spans[0].parse().expect("a count");
                accepts(key, spans[0]);
                refuses(key, &(min - 1).to_string());
                checked += 1;
            }
        }
    }
    assert!(checked >= 19, "only {checked} bounds checked");

    fn check_range(
        key: &str,
        spans: &[&str],
        accepts: &dyn Fn(&str, &str),
        refuses: &dyn Fn(&str, &str),
        secs: &dyn Fn(Duration) -> String,
    ) {
        let [min, max] = spans[..2] else {
            panic!("{key}: a range is `MIN`–`MAX`")
        };
        accepts(key, min);
        accepts(key, max);
        if let (Ok(lo), Ok(hi)) = (min.parse::<i64>(), max.parse::<i64>()) {
            refuses(key, &(lo - 1).to_string());
            refuses(key, &(hi + 1).to_string());
        } else {
            let lo = humantime::parse_duration(min).expect("a duration");
            let hi = humantime::parse_duration(max).expect("a duration");
            if !lo.is_zero() {
                refuses(key, &secs(lo / 2));
            }
            refuses(key, &secs(hi + Duration::from_millis(1)));
        }
    }
}
