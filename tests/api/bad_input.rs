//! Bad input gets a status with a useful message, never a panic, and the
//! server keeps serving afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard::grpc::pb;
use tonic::Code;

use crate::helpers::{SLOW_ENGINE, SlowLoader, TestApp, settings};

#[tokio::test]
async fn empty_or_blank_text_is_invalid_argument() {
    let app = TestApp::spawn().await;
    for text in ["", "   \n\t "] {
        let err = app.detect(text, "alice").await.expect_err("rejected");
        assert_eq!(err.code(), Code::InvalidArgument, "{text:?}");
        assert!(err.message().contains("empty"), "{}", err.message());
    }
}

#[tokio::test]
async fn text_over_the_limit_is_invalid_argument_naming_the_limit() {
    let app = TestApp::spawn_configured(&[("detector.max_text_chars", "50")]).await;
    // 50 characters (multi-byte ones) pass; 51 do not.
    app.detect(&"é".repeat(50), "alice")
        .await
        .expect("at the limit");
    let err = app
        .detect(&"é".repeat(51), "alice")
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit is 50"), "{}", err.message());
}

#[tokio::test]
async fn a_message_over_the_decode_limit_is_resource_exhausted() {
    let app = TestApp::spawn_configured(&[("server.max_decoding_message_size", "2048")]).await;
    let err = app
        .detect(&"a".repeat(4000), "alice")
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
    // Streams get the same code.
    let mut replies = app
        .detector()
        .await
        .detect_stream(futures::stream::iter([pb::DetectRequest {
            text: "a".repeat(4000),
        }]))
        .await
        .expect("opens")
        .into_inner();
    let err = replies.next().await.expect("item").expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    app.detect("Good morning to you all", "alice")
        .await
        .expect("still serving");
}

#[tokio::test]
async fn a_client_deadline_ends_the_call_with_deadline_exceeded() {
    let app = TestApp::spawn_with(
        settings(&[SLOW_ENGINE]),
        Arc::new(SlowLoader(Duration::from_secs(3))),
    )
    .await
    .ready()
    .await;
    // A raw HTTP/2 client: tonic's channel arms its own timer from the
    // grpc-timeout header, which would race the server's answer on a busy
    // machine. Here nothing but the server can end the call.
    let tcp = tokio::net::TcpStream::connect(app.grpc_addr)
        .await
        .expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{}/switchyard.v1.Detector/Detect",
        app.grpc_addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", "200m")
    .body(())
    .expect("request");
    let message = prost::Message::encode_to_vec(&pb::DetectRequest {
        text: "Good morning".into(),
    });
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&message);
    let started = Instant::now();
    let (response, mut body) = h2.send_request(request, false).expect("stream opens");
    body.send_data(frame.into(), true).expect("send");
    let response = response.await.expect("response");
    // A trailers-only answer carries the status in its headers; otherwise
    // it comes in the trailers.
    let status = match response.headers().get("grpc-status") {
        Some(status) => status.clone(),
        None => {
            let mut body = response.into_body();
            while body.data().await.is_some() {}
            body.trailers()
                .await
                .expect("trailers")
                .and_then(|t| t.get("grpc-status").cloned())
                .expect("grpc-status")
        }
    };
    assert_eq!(
        status.to_str().ok(),
        Some((Code::DeadlineExceeded as i32).to_string().as_str()),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn calls_above_the_concurrency_limit_are_shed_not_queued() {
    let app = TestApp::spawn_with(
        settings(&[("server.max_concurrent_requests", "2"), SLOW_ENGINE]),
        Arc::new(SlowLoader(Duration::from_millis(1000))),
    )
    .await
    .ready()
    .await;
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let endpoint = app.endpoint();
            tokio::spawn(async move {
                let mut client = pb::detector_client::DetectorClient::connect(endpoint)
                    .await
                    .expect("connects");
                client
                    .detect(pb::DetectRequest {
                        text: format!("Good morning number {i}"),
                    })
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut shed = Vec::new();
    for call in calls {
        match call.await.expect("no panic") {
            Ok(_) => ok += 1,
            Err(status) => shed.push(status),
        }
    }
    assert_eq!(ok, 2, "exactly the limit is served");
    assert_eq!(shed.len(), 4);
    for status in &shed {
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("limit of 2"),
            "{}",
            status.message()
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "nothing queued behind the slow calls"
    );
}

/// A message with the same field number as `DetectRequest.text` but typed
/// `bytes`, so a client can send invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawDetectRequest {
    #[prost(bytes = "vec", tag = "1")]
    text: Vec<u8>,
}

#[tokio::test]
async fn invalid_utf8_is_rejected_with_a_status_not_a_crash() {
    let app = TestApp::spawn().await;
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/switchyard.v1.Detector/Detect");
    let codec = tonic_prost::ProstCodec::<RawDetectRequest, pb::DetectResponse>::default();
    let err = grpc
        .unary(
            tonic::Request::new(RawDetectRequest {
                text: vec![0x66, 0xff, 0xfe, 0x6f],
            }),
            path,
            codec,
        )
        .await
        .expect_err("invalid UTF-8 is rejected");
    // What prost's decoder gives tonic, as grpc-java answers an unparsable
    // request (INTERNAL, "invalid protobuf byte sequence").
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("decode"), "{err:?}");
    app.detect("Good morning to you all", "alice")
        .await
        .expect("still serving");
}

#[tokio::test]
async fn a_bad_message_ends_a_stream_with_invalid_argument() {
    let app = TestApp::spawn().await;
    let requests = [
        pb::DetectRequest {
            text: "Good morning to you all".into(),
        },
        pb::DetectRequest { text: "".into() },
    ];
    let mut replies = app
        .detector()
        .await
        .detect_stream(futures::stream::iter(requests))
        .await
        .expect("opens")
        .into_inner();
    assert_eq!(
        replies.next().await.expect("item").expect("ok").language,
        "en"
    );
    let err = replies.next().await.expect("item").expect_err("rejected");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(replies.next().await.is_none());
}
