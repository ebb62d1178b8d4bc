//! `switchyard smoke`: the post-deploy smoke test. A deploy is not a release:
//! before any traffic or flag moves to a new replica set, this asks it the four
//! questions that matter (ready? self-describing? answering correctly in every
//! language? which version and flags?) and stops at the first wrong answer.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use clap::Args;

use super::client::{Target, connect_error};
use crate::engine::Language;
use crate::exit::{Exit, fail};
use crate::grpc::{codes, pb};

/// `switchyard smoke`.
#[derive(Debug, Args)]
pub struct SmokeArgs {
    // This doc comment is the flag's `--help` text, where [IPV6] is literal.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Server address: HOST:PORT or [IPV6]:PORT, no scheme.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    /// Fail unless GetInfo and every Detect reply report this release version.
    #[arg(long, value_name = "V")]
    pub expect_version: Option<String>,
    /// Bound on connecting and on each call, in seconds.
    #[arg(
        long,
        default_value_t = 5.0,
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    pub timeout: f64,
}

/// Runs `switchyard smoke`: a line per check on stdout; 0 when all pass, 1 at
/// the first failure, 2 for bad usage, 130 at Ctrl-C.
pub fn run(args: &SmokeArgs) -> Exit {
    let timeout = match super::seconds("--timeout", args.timeout) {
        Ok(timeout) => timeout,
        Err(e) => return fail(Exit::Usage, &e),
    };
    let target = match args.addr.parse() {
        Ok(target) => target,
        Err(e) => return fail(Exit::Usage, &e),
    };
    let opts = SmokeOptions {
        target,
        expect_version: args.expect_version.clone(),
        timeout,
    };
    super::run_interruptible(async {
        let mut out = std::io::stdout();
        // A failure's FAIL line is already on stdout.
        Exit::ok_if(run_checks(&opts, &mut out).await.is_ok())
    })
}

/// What to smoke-test.
#[derive(Debug, Clone)]
pub struct SmokeOptions {
    /// The server.
    pub target: Target,
    /// When set, the release version every answer must report.
    pub expect_version: Option<String>,
    /// Bound on connecting and on each call.
    pub timeout: Duration,
}

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `grpc.health.v1` Check of `readiness` is SERVING.
    Readiness,
    /// Server reflection lists the Detector, Admin and Health services.
    Reflection,
    /// Detect answers correctly for one sentence per supported language.
    Detect,
    /// Admin/GetInfo reports a version (the expected one) and a flags revision.
    Info,
}

impl Check {
    /// Every check, in order.
    pub const ALL: [Check; 4] = [
        Check::Readiness,
        Check::Reflection,
        Check::Detect,
        Check::Info,
    ];

    /// The name printed on the check's line.
    pub fn name(self) -> &'static str {
        match self {
            Check::Readiness => "readiness",
            Check::Reflection => "reflection",
            Check::Detect => "detect",
            Check::Info => "info",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A check that passed and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub check: Check,
    pub detail: String,
}

/// Every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One entry per check, in order.
    pub passed: Vec<Passed>,
}

/// Why the smoke test stopped: a check failed; the ones before it passed.
#[derive(Debug, thiserror::Error)]
#[error("{check}: {reason}")]
pub struct SmokeError {
    /// The check that failed.
    pub check: Check,
    /// What it saw.
    pub reason: String,
}

/// The `x-user-id` the smoke test calls as, so its traffic is recognisable.
pub const SMOKE_USER: &str = "switchyard-smoke";

/// A sentence each engine must place in `lang`: long enough that neither the
/// fast nor the accurate engine has an excuse.
pub fn sentence(lang: Language) -> &'static str {
    match lang {
        Language::Czech => {
            "Dnes ráno jsem šel do obchodu koupit chleba, mléko a čerstvou zeleninu, protože večer k nám přijdou přátelé na večeři."
        }
        Language::Dutch => {
            "Gisteren zijn we met de fiets naar het strand gegaan, want het weer was eindelijk mooi en de kinderen wilden graag in de zee zwemmen."
        }
        Language::English => {
            "The engineers rolled out the new release slowly and watched the error rates closely before they sent any more traffic to the fresh replicas."
        }
        Language::French => {
            "Nous avons passé tout le week-end à la campagne chez mes grands-parents, où il faisait beau et où les enfants ont joué dans le jardin."
        }
        Language::German => {
            "Wir haben am Wochenende einen langen Spaziergang durch den Wald gemacht und danach in einem kleinen Gasthaus zu Mittag gegessen."
        }
        Language::Italian => {
            "Domenica scorsa siamo andati al mare con tutta la famiglia, abbiamo mangiato il pesce fresco e siamo tornati a casa molto tardi."
        }
        Language::Polish => {
            "W zeszłym tygodniu pojechaliśmy z rodziną w góry, gdzie codziennie chodziliśmy na długie wycieczki i jedliśmy pyszne pierogi."
        }
        Language::Portuguese => {
            "No fim de semana passado fomos visitar os nossos avós no interior, onde comemos muito bem e passeamos pelos campos durante a tarde."
        }
        Language::Russian => {
            "Вчера вечером мы долго гуляли по старому городу, разговаривали о книгах и пили горячий чай в маленьком уютном кафе у реки."
        }
        Language::Spanish => {
            "El domingo pasado fuimos al mercado con mis abuelos para comprar frutas y verduras frescas, y después comimos juntos en la plaza del pueblo."
        }
        Language::Swedish => {
            "I somras åkte vi till min mormors stuga vid sjön, där vi badade varje dag och grillade korv på kvällarna tillsammans med grannarna."
        }
        Language::Turkish => {
            "Geçen hafta sonu ailemle birlikte köye gittik, bahçede çay içtik ve akşam yemeğinde annemin yaptığı lezzetli yemekleri yedik."
        }
    }
}

/// Runs the checks in order, writing `ok   CHECK DETAIL` for each that passes
/// and `FAIL CHECK: REASON` for the first that fails, where it stops.
pub async fn run_checks(
    opts: &SmokeOptions,
    out: &mut (dyn Write + Send),
) -> Result<Report, SmokeError> {
    let endpoint = opts.target.endpoint(opts.timeout);
    let mut passed = Vec::new();
    // Connecting is part of the first check: an unreachable server is not ready.
    let channel = endpoint.connect().await.map_err(|e| SmokeError {
        check: Check::Readiness,
        reason: format!("cannot connect to {}: {}", opts.target, connect_error(&e)),
    });
    let channel = match channel {
        Ok(channel) => channel,
        Err(e) => return Err(report_failure(out, e)),
    };
    for check in Check::ALL {
        match run_check(check, &channel, opts).await {
            Ok(detail) => {
                let _ = writeln!(out, "ok   {check} {detail}");
                passed.push(Passed { check, detail });
            }
            Err(reason) => return Err(report_failure(out, SmokeError { check, reason })),
        }
    }
    Ok(Report { passed })
}

fn report_failure(out: &mut dyn Write, err: SmokeError) -> SmokeError {
    let _ = writeln!(out, "FAIL {err}");
    err
}

/// One check: its line's detail when it passes, the reason when not.
async fn run_check(check: Check, channel: &Channel, opts: &SmokeOptions) -> Result<String, String> {
    match check {
        Check::Readiness => readiness(channel.clone()).await,
        Check::Reflection => reflection(channel.clone()).await,
        Check::Detect => detect(channel.clone(), opts.expect_version.as_deref()).await,
        Check::Info => info(channel.clone(), opts.expect_version.as_deref()).await,
    }
}

fn rpc_error(what: &str, status: &tonic::Status) -> String {
    format!(
        "{what}: {}: {}",
        codes::name(status.code()),
        status.message()
    )
}

async fn readiness(channel: Channel) -> Result<String, String> {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .map_err(|s| rpc_error("Health/Check", &s))?;
    let status =
        ServingStatus::try_from(reply.into_inner().status).unwrap_or(ServingStatus::Unknown);
    match status {
        ServingStatus::Serving => Ok(status.as_str_name().to_owned()),
        other => Err(format!("readiness is {}", other.as_str_name())),
    }
}

/// The services a Switchyard replica must describe by reflection.
const REQUIRED_SERVICES: [&str; 3] = [
    pb::detector_server::SERVICE_NAME,
    pb::admin_server::SERVICE_NAME,
    tonic_health::pb::health_server::SERVICE_NAME,
];

async fn reflection(channel: Channel) -> Result<String, String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .map_err(|s| rpc_error("ServerReflectionInfo", &s))?
        .into_inner();
    let reply: ServerReflectionResponse = replies
        .message()
        .await
        .map_err(|s| rpc_error("ServerReflectionInfo", &s))?
        .ok_or("the reflection stream ended without a reply")?;
    let listed: Vec<String> = match reply.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        Some(MessageResponse::ErrorResponse(e)) => {
            return Err(format!(
                "list_services: error {}: {}",
                e.error_code, e.error_message
            ));
        }
        _ => return Err("list_services: unexpected reply".into()),
    };
    let missing: Vec<&str> = REQUIRED_SERVICES
        .into_iter()
        .filter(|name| !listed.iter().any(|l| l == name))
        .collect();
    if missing.is_empty() {
        Ok(format!(
            "{} services listed, including {}",
            listed.len(),
            REQUIRED_SERVICES.join(", ")
        ))
    } else {
        Err(format!(
            "missing {} (listed: {})",
            missing.join(", "),
            listed.join(", ")
        ))
    }
}

async fn detect(channel: Channel, expect_version: Option<&str>) -> Result<String, String> {
    let mut client = pb::detector_client::DetectorClient::new(channel);
    let mut engines: Vec<String> = Vec::new();
    let mut versions: Vec<String> = Vec::new();
    for lang in Language::ALL {
        let mut request = tonic::Request::new(pb::DetectRequest {
            text: sentence(lang).to_owned(),
        });
        request.metadata_mut().insert(
            "x-user-id",
            tonic::metadata::MetadataValue::from_static(SMOKE_USER),
        );
        let reply = client
            .detect(request)
            .await
            .map_err(|s| rpc_error(&format!("Detect ({})", lang.code()), &s))?
            .into_inner();
        if reply.language != lang.code() {
            return Err(format!(
                "expected {} for the {} sentence, {} answered {}",
                lang.code(),
                lang.code(),
                reply.engine,
                reply.language
            ));
        }
        let version = reply.served_by.map(|s| s.version).unwrap_or_default();
        if let Some(expected) = expect_version
            && version != expected
        {
            return Err(format!(
                "served by version {version:?}, expected {expected:?} ({} sentence)",
                lang.code()
            ));
        }
        for (seen, value) in [(&mut engines, reply.engine), (&mut versions, version)] {
            if !seen.contains(&value) {
                seen.push(value);
            }
        }
    }
    Ok(format!(
        "{n}/{n} languages (engine {}, version {})",
        engines.join(", "),
        versions.join(", "),
        n = Language::ALL.len()
    ))
}

async fn info(channel: Channel, expect_version: Option<&str>) -> Result<String, String> {
    let info = pb::admin_client::AdminClient::new(channel)
        .get_info(pb::GetInfoRequest {})
        .await
        .map_err(|s| rpc_error("Admin/GetInfo", &s))?
        .into_inner();
    if info.version.is_empty() {
        return Err("GetInfo reports no version".into());
    }
    if let Some(expected) = expect_version
        && info.version != expected
    {
        return Err(format!("version {:?}, expected {expected:?}", info.version));
    }
    let revision = info.flags.map(|f| f.revision).unwrap_or_default();
    if revision.is_empty() {
        return Err("GetInfo reports no flags revision".into());
    }
    Ok(format!(
        "version {} (build {}, commit {}), track {}, flags revision {revision}",
        info.version, info.build_version, info.git_commit, info.track
    ))
}
