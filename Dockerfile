# Multi-stage build: compile in the Rust image, run in a slim Debian image as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pvedeploy --no-default-features \
 && strip target/release/pvedeploy

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl openssh-client git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/pvedeploy --create-home pvedeploy
COPY --from=build /src/target/release/pvedeploy /usr/local/bin/pvedeploy
USER pvedeploy
WORKDIR /var/lib/pvedeploy
VOLUME ["/var/lib/pvedeploy"]
ENV PVEDEPLOY_DATA_DIR=/var/lib/pvedeploy/data \
    PVEDEPLOY_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["pvedeploy"]
CMD ["serve"]
