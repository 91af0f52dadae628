# tagsync container image: a release build on Debian, run as a non-root user
# in a slim image with CA certificates (for the download center and Azure)
# and time-zone data. The Helm chart's default image is this one.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tagsync

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 tagsync \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /var/lib/tagsync --shell /usr/sbin/nologin tagsync \
 && mkdir -p /var/lib/tagsync && chown 65532:65532 /var/lib/tagsync
COPY --from=build /src/target/release/tagsync /usr/local/bin/tagsync
USER 65532:65532
WORKDIR /var/lib/tagsync
ENTRYPOINT ["/usr/local/bin/tagsync"]
CMD ["sync"]
