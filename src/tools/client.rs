//! What the tools share as gRPC clients: the one parser for the address of
//! the server they call ([`Target`]), and the reading of client-side errors
//! (why a connection failed, whether a failed call may be sent again).
//!
//! One rule for every tool (`check`, `smoke`, `watch`, the smoke webhook's
//! `addr`): a target is `HOST:PORT`, where `HOST` is a DNS name
//! (`localhost`, `switchyard.prod.svc.cluster.local`) or an IPv4 address, or
//! `[IPV6]:PORT`, and `PORT` is 1 to 65535. No scheme (`http://`), path or
//! user: the tools speak plaintext HTTP/2, so there is nothing a scheme could
//! choose, and accepting one here but not there is how the forms drifted
//! apart. Anything else is bad usage (exit 2) rather than a failed check.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use http::Uri;
use tonic::transport::Endpoint;

/// What a target that does not parse is told; names every accepted form.
pub const TARGET_FORMS: &str = "expected HOST:PORT or [IPV6]:PORT without a scheme, e.g. 127.0.0.1:50051, localhost:50051 or [::1]:50051";

/// An address that is not a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {addr:?}: {reason}")]
pub struct AddrError {
    /// Where the address came from (`--addr`, the webhook's `metadata.addr`).
    pub field: &'static str,
    /// What was given.
    pub addr: String,
    /// What is wrong with it, naming the accepted forms.
    pub reason: String,
}

impl AddrError {
    /// The same error, for an address read from `field`.
    pub fn in_field(mut self, field: &'static str) -> Self {
        self.field = field;
        self
    }
}

/// The address of a server to call: `HOST:PORT` or `[IPV6]:PORT` (see the
/// module doc). Parsed with [`str::parse`]; displays as it parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    uri: Uri,
}

impl Target {
    /// The host: a DNS name, an IPv4 address, or an IPv6 address in brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, 1 to 65535.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A plaintext HTTP/2 endpoint for this target, with `timeout` both for
    /// connecting and for each call.
    pub fn endpoint(&self, timeout: Duration) -> Endpoint {
        Endpoint::from(self.uri.clone())
            .connect_timeout(timeout)
            .timeout(timeout)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for Target {
    type Err = AddrError;

    fn from_str(addr: &str) -> Result<Self, AddrError> {
        let invalid = |reason: &str| AddrError {
            field: "--addr",
            addr: addr.to_owned(),
            reason: reason.to_owned(),
        };
        if addr.contains("://") {
            return Err(invalid(&format!(
                "a scheme is not accepted: {TARGET_FORMS}"
            )));
        }
        let (host, port) = split_host_port(addr).ok_or_else(|| invalid(TARGET_FORMS))?;
        if !host.starts_with('[') && host.contains(':') {
            return Err(invalid(&format!(
                "an IPv6 address needs brackets: {TARGET_FORMS}"
            )));
        }
        if !valid_host(host) {
            return Err(invalid(TARGET_FORMS));
        }
        let port = match port.parse::<u16>() {
            Ok(number) if number > 0 && port.bytes().all(|b| b.is_ascii_digit()) => number,
            _ => return Err(invalid("the port must be a number from 1 to 65535")),
        };
        let uri = format!("http://{host}:{port}")
            .parse::<Uri>()
            .map_err(|_| invalid(TARGET_FORMS))?;
        Ok(Target {
            host: host.to_owned(),
            port,
            uri,
        })
    }
}

/// `HOST` (brackets kept for IPv6) and `PORT` of `HOST:PORT`.
fn split_host_port(addr: &str) -> Option<(&str, &str)> {
    if addr.starts_with('[') {
        let end = addr.find(']')?;
        let (host, rest) = addr.split_at(end + 1);
        Some((host, rest.strip_prefix(':')?))
    } else {
        addr.rsplit_once(':')
    }
}

/// A DNS name (letters, digits, `-` and `_` in non-empty dot-separated
/// labels, one trailing dot allowed), an IPv4 address, or `[IPV6]`.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether a failed call was never processed by any server, so sending it
/// again is safe: gRPC's transparent retry (gRFC A6), which tonic's client
/// does not do. Two cases meet a GOAWAY (a connection-age or drain one): the
/// request was still queued in the client when its connection closed
/// (hyper: canceled, never sent), or the server's final GOAWAY named a last
/// stream below it (h2: GOAWAY with NO_ERROR, refused unprocessed).
pub fn never_processed(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(cause) = next {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = cause.downcast_ref::<h2::Error>()
            && h2.is_go_away()
            && h2.is_remote()
            && h2.reason() == Some(h2::Reason::NO_ERROR)
        {
            return true;
        }
        next = cause.source();
    }
    false
}

/// Why a connection failed, cause by cause (`tcp connect error: Connection
/// refused (os error 111)`), without tonic's generic outer "transport error".
pub fn connect_error(err: &tonic::transport::Error) -> String {
    let mut causes = Vec::new();
    let mut next = std::error::Error::source(err);
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        // tonic and hyper wrap the same connect error twice.
        if causes.last() != Some(&cause_text) {
            causes.push(cause_text);
        }
        next = cause.source();
    }
    if causes.is_empty() {
        err.to_string()
    } else {
        causes.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_form_parses_and_displays_as_given() {
        for (addr, host, port) in [
            ("127.0.0.1:50051", "127.0.0.1", 50051),
            ("localhost:1", "localhost", 1),
            ("svc.ns:80", "svc.ns", 80),
            (
                "switchyard.prod.svc.cluster.local:65535",
                "switchyard.prod.svc.cluster.local",
                65535,
            ),
            ("fqdn.example.:443", "fqdn.example.", 443),
            ("[::1]:50051", "[::1]", 50051),
            ("[2001:db8::7]:8080", "[2001:db8::7]", 8080),
        ] {
            let target: Target = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
            assert_eq!((target.host(), target.port()), (host, port), "{addr}");
            assert_eq!(target.to_string(), addr);
            let endpoint = target.endpoint(Duration::from_secs(1));
            assert_eq!(endpoint.uri().to_string(), format!("http://{addr}/"));
        }
    }

    #[test]
    fn a_scheme_is_refused_by_name() {
        for addr in ["http://127.0.0.1:50051", "https://svc:443", "grpc://x:1"] {
            let err = addr.parse::<Target>().expect_err(addr);
            assert!(err.reason.starts_with("a scheme is not accepted"), "{err}");
        }
    }

    #[test]
    fn an_unbracketed_ipv6_address_is_told_to_use_brackets() {
        for addr in ["::1:50051", "2001:db8::7:80"] {
            let err = addr.parse::<Target>().expect_err(addr);
            assert!(
                err.reason.starts_with("an IPv6 address needs brackets"),
                "{err}"
            );
        }
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused() {
        for addr in [
            "host:0",
            "host:65536",
            "host:99999",
            "host:-1",
            "host:+80",
            "host:port",
            "host:",
            "host:1/path",
        ] {
            let err = addr.parse::<Target>().expect_err(addr);
            assert_eq!(
                err.reason, "the port must be a number from 1 to 65535",
                "{addr}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_naming_the_accepted_forms() {
        for addr in [
            "",
            "nope",
            "localhost",
            "127.0.0.1",
            ":50051",
            "[::1]",
            "[::1]50051",
            "[nope]:1",
            "[::1:1",
            "user@host:1",
            "not an address",
            " host:1",
            "a..b:1",
            "-a:1",
            "é.example:1",
        ] {
            let err = addr.parse::<Target>().expect_err(addr);
            assert!(err.reason.contains(TARGET_FORMS), "{addr}: {err}");
            let line = err.to_string();
            assert!(line.starts_with("invalid --addr "), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn the_error_names_where_the_address_came_from() {
        let err = "nope".parse::<Target>().expect_err("nope");
        assert_eq!(
            err.in_field("metadata.addr").to_string(),
            format!("invalid metadata.addr \"nope\": {TARGET_FORMS}")
        );
    }
}
