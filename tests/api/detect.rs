//! Detect answers the right language with each engine and says who answered.

use futures::StreamExt;
use switchyard::grpc::pb;

use crate::helpers::TestApp;

/// A sentence per supported language, long enough for both engines.
pub const SENTENCES: [(&str, &str); 12] = [
    (
        "cs",
        "Dobrý den, jak se máte? Dnes je krásné počasí a jdeme na procházku do parku.",
    ),
    (
        "nl",
        "Goedemorgen, hoe gaat het met je? Vandaag gaan we samen naar de markt in de stad.",
    ),
    (
        "en",
        "Good morning, how are you? Today we are going to the market in the city together.",
    ),
    (
        "fr",
        "Bonjour, comment allez-vous? Aujourd'hui nous allons ensemble au marché de la ville.",
    ),
    (
        "de",
        "Guten Morgen, wie geht es dir? Heute gehen wir zusammen auf den Markt in der Stadt.",
    ),
    (
        "it",
        "Buongiorno, come stai? Oggi andiamo insieme al mercato della città con gli amici.",
    ),
    (
        "pl",
        "Dzień dobry, jak się masz? Dzisiaj idziemy razem na targ w mieście z przyjaciółmi.",
    ),
    (
        "pt",
        "Bom dia, como você está? Hoje nós vamos juntos ao mercado da cidade com os amigos.",
    ),
    (
        "ru",
        "Доброе утро, как у тебя дела? Сегодня мы вместе идём на рынок в городе с друзьями.",
    ),
    (
        "es",
        "Buenos días, ¿cómo estás? Hoy vamos juntos al mercado de la ciudad con los amigos.",
    ),
    (
        "sv",
        "God morgon, hur mår du? Idag går vi tillsammans till torget i staden med vännerna.",
    ),
    (
        "tr",
        "Günaydın, nasılsın? Bugün arkadaşlarla birlikte şehirdeki pazara gidiyoruz.",
    ),
];

async fn every_language_with(engine: &str) {
    let app = TestApp::spawn_configured(&[
        ("detector.default_engine", engine),
        ("deployment.track", "canary"),
    ])
    .await;
    for (code, text) in SENTENCES {
        let reply = app.detect(text, "alice").await.expect("detect succeeds");
        assert_eq!(reply.language, code, "{engine} on {text:?}");
        assert_eq!(reply.engine, engine);
        assert!(
            reply.confidence > 0.0 && reply.confidence <= 1.0,
            "confidence {} out of (0, 1]",
            reply.confidence
        );
        let served_by = reply.served_by.expect("served_by is set");
        assert_eq!(served_by.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(served_by.pod, "test-pod");
        assert_eq!(served_by.track, "canary");
    }
}

#[tokio::test]
async fn whatlang_detects_every_supported_language() {
    every_language_with("whatlang").await;
}

#[tokio::test]
async fn lingua_detects_every_supported_language() {
    every_language_with("lingua").await;
}

#[tokio::test]
async fn the_engines_differ_where_the_brief_says_they_do() {
    let text = "Zero downtime deployments with Kubernetes";
    // whatlang leads with Portuguese by too little to be reliable: und.
    for (engine, expected) in [("whatlang", "und"), ("lingua", "en")] {
        let app = TestApp::spawn_configured(&[("detector.default_engine", engine)]).await;
        let reply = app.detect(text, "bob").await.expect("detect");
        assert_eq!(
            (reply.engine.as_str(), reply.language.as_str()),
            (engine, expected)
        );
    }
}

#[tokio::test]
async fn text_without_a_language_is_und() {
    let app = TestApp::spawn().await;
    let reply = app
        .detect("12345 67890 !!! ???", "alice")
        .await
        .expect("detect");
    assert_eq!(reply.language, "und");
    assert_eq!(reply.confidence, 0.0);
}

#[tokio::test]
async fn detect_stream_answers_each_message_in_order() {
    let app = TestApp::spawn().await;
    let requests: Vec<_> = SENTENCES
        .iter()
        .map(|(_, text)| pb::DetectRequest {
            text: text.to_string(),
        })
        .collect();
    let mut replies = app
        .detector()
        .await
        .detect_stream(futures::stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();
    let mut languages = Vec::new();
    while let Some(reply) = replies.next().await {
        languages.push(reply.expect("reply").language);
    }
    let expected: Vec<_> = SENTENCES.iter().map(|(code, _)| code.to_string()).collect();
    assert_eq!(languages, expected);
}
