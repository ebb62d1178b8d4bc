//! Shadow traffic is told apart from real traffic: a mirrored copy (its
//! authority ends in `-shadow`, as Envoy and Istio before 1.28 send it) or
//! anything served with `--track shadow` is counted as shadow.

use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;
use tonic::transport::Channel;

use crate::helpers::TestApp;

const TEXT: &str = "Le renard brun rapide saute par-dessus le chien paresseux";

async fn detect(client: &mut DetectorClient<Channel>) {
    client
        .detect(pb::DetectRequest { text: TEXT.into() })
        .await
        .expect("detect");
}

#[tokio::test]
async fn mirrored_copies_are_counted_as_shadow_and_real_calls_are_not() {
    let app = TestApp::spawn().await;
    let mut real = app
        .detector_as("switchyard.switchyard.svc.cluster.local:50051")
        .await;
    let mut mirrored = app
        .detector_as("switchyard.switchyard.svc.cluster.local-shadow:50051")
        .await;
    for _ in 0..3 {
        detect(&mut real).await;
    }
    for _ in 0..2 {
        detect(&mut mirrored).await;
    }
    assert_eq!(app.traffic().await, (3, 2));
}

#[tokio::test]
async fn everything_on_the_shadow_track_is_shadow() {
    let app = TestApp::spawn_configured(&[("deployment.track", "shadow")]).await;
    let mut client = app.detector().await;
    for _ in 0..4 {
        detect(&mut client).await;
    }
    assert_eq!(app.traffic().await, (0, 4));
}
