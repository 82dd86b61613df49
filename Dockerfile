# The usermgmt image: `docker build -t usermgmt .`, or `docker compose up`
# for the service together with PostgreSQL.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin usermgmt \
    && cp target/release/usermgmt /usr/local/bin/usermgmt

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin usermgmt
COPY --from=builder /usr/local/bin/usermgmt /usr/local/bin/usermgmt
USER usermgmt
EXPOSE 50051
ENTRYPOINT ["usermgmt"]
CMD ["serve", "--listen", "0.0.0.0:50051"]
