//! Generates the gRPC code and the reflection descriptor set from proto/ with
//! a pure-Rust protobuf compiler (protox), so no system `protoc` is needed.

use std::path::PathBuf;
use std::process::Command;

// Cargo talks to build scripts through the environment.
#[allow(clippy::disallowed_methods)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/switchyard/v1/detector.proto",
        "proto/switchyard/v1/admin.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set served by reflection.
    std::fs::write(
        out_dir.join("switchyard_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;

    // The commit the binary is built from, reported by Admin/GetInfo and logs.
    let commit = std::env::var("SWITCHYARD_GIT_COMMIT").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    });
    println!(
        "cargo:rustc-env=SWITCHYARD_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=SWITCHYARD_GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    Ok(())
}
