# The usermgmt image: `docker build -t usermgmt .`, or `docker compose up`
# for the service together with PostgreSQL. Multi-stage: the runtime image is
# debian-slim with the one binary, run as a non-root user.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p usermgmt --bin usermgmt \
    && cp target/release/usermgmt /usr/local/bin/usermgmt

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin usermgmt
COPY --from=builder /usr/local/bin/usermgmt /usr/local/bin/usermgmt
USER usermgmt
# gRPC and gRPC-Web; Prometheus metrics when USERMGMT_METRICS_LISTEN is set.
EXPOSE 50051 9090
# Asks the server's own gRPC health service (NOT_SERVING without database).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["usermgmt", "healthcheck", "--url", "http://127.0.0.1:50051"]
ENTRYPOINT ["usermgmt"]
# `serve` creates the database if needed and runs pending migrations first.
CMD ["serve", "--listen", "0.0.0.0:50051"]
