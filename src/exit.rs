//! The process exit codes, one type for the server and every tool, and the
//! one function that reports a failure as a single line on stderr.
//!
//! The meanings are the README's "Exit codes" table: 0 ok, 1 a check (or the
//! drain) failed, 2 bad usage or configuration, 130 interrupted.

use std::fmt::Display;
use std::io::Write;

/// How the process ends. Every command returns one; `main` turns it into the
/// process's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what it was asked (the service is SERVING, every
    /// check passed, the drain finished in time).
    Ok,
    /// 1: the command ran and what it checked failed (or the server failed
    /// after its configuration was accepted).
    Failed,
    /// 2: bad usage or configuration, found before anything was asked or
    /// bound.
    Usage,
    /// 130 (128 + SIGINT): stopped by a signal before it finished.
    Interrupted,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Interrupted => 130,
        }
    }

    /// [`Exit::Ok`] when `ok`, [`Exit::Failed`] otherwise.
    pub fn ok_if(ok: bool) -> Exit {
        if ok { Exit::Ok } else { Exit::Failed }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        // Every code is below 256.
        std::process::ExitCode::from(exit.code() as u8)
    }
}

/// Writes `switchyard: ERR` to `out` as one line (whitespace, newlines
/// included, collapsed to single spaces) and returns `exit`.
pub fn report(out: &mut dyn Write, exit: Exit, err: &dyn Display) -> Exit {
    let line = err
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(out, "switchyard: {line}");
    exit
}

/// [`report`] to stderr: the one-line error every command prints before it
/// exits with anything but 0.
pub fn fail(exit: Exit, err: &dyn Display) -> Exit {
    report(&mut std::io::stderr().lock(), exit, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_documented_ones() {
        let codes: Vec<i32> = [Exit::Ok, Exit::Failed, Exit::Usage, Exit::Interrupted]
            .into_iter()
            .map(Exit::code)
            .collect();
        assert_eq!(codes, [0, 1, 2, 130]);
        assert_eq!(Exit::ok_if(true), Exit::Ok);
        assert_eq!(Exit::ok_if(false), Exit::Failed);
    }

    #[test]
    fn a_report_is_one_line_whatever_the_error_holds() {
        let mut out = Vec::new();
        let exit = report(
            &mut out,
            Exit::Usage,
            &"invalid --addr\n  \"x\":\tno port\n",
        );
        assert_eq!(exit, Exit::Usage);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "switchyard: invalid --addr \"x\": no port\n"
        );
    }
}
