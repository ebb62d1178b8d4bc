# syntax=docker/dockerfile:1
# Switchyard image: build with the Rust toolchain, run on distroless (no shell,
# no package manager), as the distroless "nonroot" user 65532.
#   docker build -t switchyard:0.1.0 --build-arg SWITCHYARD_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .
#   kind load docker-image switchyard:0.1.0

FROM rust:1.95-bookworm AS build
WORKDIR /build

# 1. Dependencies only, cached until Cargo.toml or Cargo.lock change: compile them
#    against stub sources (every target in Cargo.toml must exist for cargo to
#    read the manifest), then forget the stub crate's own artifacts.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches tests/api \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs benches/flags.rs tests/allocations.rs tests/api/main.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/switchyard* target/release/deps/switchyard-* \
           target/release/deps/libswitchyard-* target/release/.fingerprint/switchyard-*

# 2. The service itself. The protos are compiled by build.rs with protox (no
#    protoc); flags/flags.json is embedded as the built-in flag set. .git is not
#    in the context, so the commit reported by GetInfo comes from this build arg.
ARG SWITCHYARD_GIT_COMMIT=unknown
ENV SWITCHYARD_GIT_COMMIT=${SWITCHYARD_GIT_COMMIT}
COPY build.rs ./
COPY proto ./proto
COPY flags ./flags
COPY src ./src
RUN cargo build --release --locked --bin switchyard \
 && install -D -m 0755 target/release/switchyard /out/switchyard

# cc: glibc + libgcc, what a Rust binary links against dynamically.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/switchyard /usr/local/bin/switchyard
USER 65532:65532
# 50051 gRPC, 50052 gRPC Health for the kubelet's probes, 9090 admin HTTP (/healthz, /readyz, /metrics)
EXPOSE 50051 50052 9090
ENTRYPOINT ["/usr/local/bin/switchyard", "serve"]
