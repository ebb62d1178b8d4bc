//! B3 propagation (openzipkin/b3-propagation), the format Envoy and Istio
//! forward: the multi-header form (`x-b3-traceid`, `x-b3-spanid`,
//! `x-b3-sampled`, `x-b3-flags`) and the single `b3` header
//! (`{traceid}-{spanid}[-{sampled}[-{parentspanid}]]`). Trace ids are 16 or
//! 32 hex digits (a 64-bit id is left-padded); span ids 16.
//!
//! Ours rather than `opentelemetry-zipkin`'s (which has no HTTP client with
//! its default features off): that one turns a deferred decision (no
//! `x-b3-sampled`, what a proxy that provisions ids sends) into "not
//! sampled", so a parent-based sampler would drop every such call; here a
//! deferred decision is taken as the proxy's accept. Tested against the
//! cases the B3 specification documents.

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";
const SINGLE: &str = "b3";

/// Extracts either B3 form; injects the multi-header form.
#[derive(Debug)]
pub struct B3Propagator {
    fields: [String; 5],
}

impl Default for B3Propagator {
    fn default() -> Self {
        Self {
            fields: [TRACE_ID, SPAN_ID, SAMPLED, FLAGS, SINGLE].map(String::from),
        }
    }
}

fn trace_id(hex: &str) -> Option<TraceId> {
    let valid = (hex.len() == 16 || hex.len() == 32) && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let id = TraceId::from_hex(hex).ok().filter(|_| valid)?;
    (id != TraceId::INVALID).then_some(id)
}

fn span_id(hex: &str) -> Option<SpanId> {
    let valid = hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let id = SpanId::from_hex(hex).ok().filter(|_| valid)?;
    (id != SpanId::INVALID).then_some(id)
}

/// `1`/`true`/`d` (debug) sample; `0`/`false` do not; absent: defer
/// (sampled, as the proxy that started the trace decided to forward it).
fn sampled(value: Option<&str>) -> Option<bool> {
    match value {
        None => Some(true),
        Some("1" | "true" | "d") => Some(true),
        Some("0" | "false") => Some(false),
        Some(_) => None,
    }
}

fn span_context(trace: TraceId, span: SpanId, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(trace, span, flags, true, TraceState::default())
}

impl B3Propagator {
    fn extract_single(&self, value: &str) -> Option<SpanContext> {
        let mut parts = value.trim().split('-');
        let trace = trace_id(parts.next()?)?;
        let span = span_id(parts.next()?)?;
        let sample = sampled(parts.next())?;
        Some(span_context(trace, span, sample))
    }

    fn extract_multi(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        let trace = trace_id(extractor.get(TRACE_ID)?.trim())?;
        let span = span_id(extractor.get(SPAN_ID)?.trim())?;
        let debug = extractor.get(FLAGS).is_some_and(|f| f.trim() == "1");
        let sample = debug || sampled(extractor.get(SAMPLED).map(str::trim))?;
        Some(span_context(trace, span, sample))
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        injector.set(TRACE_ID, sc.trace_id().to_string());
        injector.set(SPAN_ID, sc.span_id().to_string());
        injector.set(SAMPLED, if sc.is_sampled() { "1" } else { "0" }.to_owned());
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let found = match extractor.get(SINGLE) {
            Some(single) => self.extract_single(single),
            None => self.extract_multi(extractor),
        };
        match found {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn extract(headers: &[(&str, &str)]) -> SpanContext {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cx = B3Propagator::default().extract_with_context(&Context::new(), &map);
        cx.span().span_context().clone()
    }

    #[test]
    fn multi_header_form() {
        let sc = extract(&[
            (TRACE_ID, "80f198ee56343ba864fe8b2a57d3eff7"),
            (SPAN_ID, "e457b5a2e4d86bd1"),
            (SAMPLED, "1"),
        ]);
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(sc.span_id().to_string(), "e457b5a2e4d86bd1");
    }

    #[test]
    fn sixty_four_bit_trace_ids_are_left_padded() {
        let sc = extract(&[
            (TRACE_ID, "64fe8b2a57d3eff7"),
            (SPAN_ID, "e457b5a2e4d86bd1"),
        ]);
        assert_eq!(
            sc.trace_id().to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
        assert!(sc.is_sampled(), "absent x-b3-sampled defers: sampled");
    }

    #[test]
    fn single_header_form_and_flags() {
        let sc = extract(&[(
            SINGLE,
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
        )]);
        assert!(sc.is_valid() && !sc.is_sampled());
        let debug = extract(&[
            (TRACE_ID, "80f198ee56343ba864fe8b2a57d3eff7"),
            (SPAN_ID, "e457b5a2e4d86bd1"),
            (SAMPLED, "0"),
            (FLAGS, "1"),
        ]);
        assert!(debug.is_sampled(), "debug flag forces sampling");
    }

    /// The cases the B3 specification (openzipkin/b3-propagation's README)
    /// documents, with its example values.
    #[test]
    fn the_zipkin_documented_cases() {
        // Multiple headers, with a parent span id: accept.
        let sc = extract(&[
            (TRACE_ID, "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-parentspanid", "0020000000000001"),
            (SPAN_ID, "a2fb4a1d1a96d312"),
            (SAMPLED, "1"),
        ]);
        assert!(sc.is_valid() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "463ac35c9f6413ad48485a3953bb6124"
        );
        assert_eq!(sc.span_id().to_string(), "a2fb4a1d1a96d312");
        // The single header with all four fields (the parent last).
        let sc = extract(&[(
            SINGLE,
            "80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-1-e457b5a2e4d86bd1",
        )]);
        assert!(sc.is_sampled());
        assert_eq!(sc.span_id().to_string(), "05e3ac9a4f6e3b90");
        // Debug in the single header (`d`) and as `X-B3-Flags: 1` without
        // `X-B3-Sampled`: both imply accept.
        assert!(
            extract(&[(
                SINGLE,
                "80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-d"
            )])
            .is_sampled()
        );
        assert!(
            extract(&[
                (TRACE_ID, "80f198ee56343ba864fe8b2a57d3eff7"),
                (SPAN_ID, "05e3ac9a4f6e3b90"),
                (FLAGS, "1"),
            ])
            .is_sampled()
        );
        // The lenient legacy values `true` and `false`.
        for (value, sampled) in [("true", true), ("false", false)] {
            let sc = extract(&[
                (TRACE_ID, "80f198ee56343ba864fe8b2a57d3eff7"),
                (SPAN_ID, "05e3ac9a4f6e3b90"),
                (SAMPLED, value),
            ]);
            assert!(sc.is_valid());
            assert_eq!(sc.is_sampled(), sampled, "{value}");
        }
        // The single header takes precedence over the multiple headers.
        let sc = extract(&[
            (
                SINGLE,
                "80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-0",
            ),
            (TRACE_ID, "463ac35c9f6413ad48485a3953bb6124"),
            (SPAN_ID, "a2fb4a1d1a96d312"),
            (SAMPLED, "1"),
        ]);
        assert_eq!(
            sc.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert!(!sc.is_sampled());
        // A deny with no identifiers (`b3: 0`) gives no parent to join.
        assert!(!extract(&[(SINGLE, "0")]).is_valid());
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for headers in [
            vec![(TRACE_ID, "xyz"), (SPAN_ID, "e457b5a2e4d86bd1")],
            vec![
                (TRACE_ID, "80f198ee56343ba864fe8b2a57d3eff7"),
                (SPAN_ID, "12"),
            ],
            vec![
                (TRACE_ID, "00000000000000000000000000000000"),
                (SPAN_ID, "e457b5a2e4d86bd1"),
            ],
            vec![(SINGLE, "0")],
            vec![(SPAN_ID, "e457b5a2e4d86bd1")],
        ] {
            assert!(!extract(&headers).is_valid(), "{headers:?}");
        }
    }

    #[test]
    fn inject_writes_what_extract_reads() {
        let original = span_context(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex"),
            SpanId::from_hex("b7ad6b7169203331").expect("hex"),
            true,
        );
        let cx = Context::new().with_remote_span_context(original.clone());
        let mut map: HashMap<String, String> = HashMap::new();
        B3Propagator::default().inject_context(&cx, &mut map);
        let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let back = extract(&pairs);
        assert_eq!(back.trace_id(), original.trace_id());
        assert_eq!(back.span_id(), original.span_id());
    }
}
