# One image with every CLS binary: api-gateway, status-aggregator, reconcile-scheduler,
# event-publisher, migrate, and healthcheck (for container health checks). Each Deployment or
# compose service picks its binary with `command`; the default is the API.
#
# Build: docker build -t cls .
# Layers: cargo-chef builds the dependency graph from the manifests alone, so code changes
# rebuild only the workspace crates. protoc is vendored by the build; TLS is rustls (no
# OpenSSL), and Postgres is spoken natively (no libpq), so the runtime needs only glibc.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
        --bin api-gateway --bin status-aggregator --bin reconcile-scheduler \
        --bin event-publisher --bin migrate --bin healthcheck \
    && mkdir /out \
    && cp target/release/api-gateway target/release/status-aggregator \
          target/release/reconcile-scheduler target/release/event-publisher \
          target/release/migrate target/release/healthcheck /out/

# Distroless: glibc and CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
# API, admin (metrics/health), gRPC of the aggregator, scheduler and publisher.
EXPOSE 8080 8081 50051 50052 50053
CMD ["api-gateway"]
