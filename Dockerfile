# tagsync container image: a release build on Debian, run as uid 65532 in a
# slim image with CA certificates (the download center and Azure are reached
# over TLS, verified against the system store). No tzdata: time zones are
# compiled into the binary.
#
#   docker build -t ghcr.io/OWNER/tagsync:0.1.0 .
#
# CI builds the same file with podman, supplying the `build` stage from the
# binary it already built: podman build --build-context build=DIR .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: rebuilt only when the manifests
# change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
# Cargo wants a file for every [[bench]] the manifest names.
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for b in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' Cargo.toml); do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked --bin tagsync \
 && rm -rf src benches
COPY . .
# Newer than the stubs' build outputs, so cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin tagsync \
 && install -D target/release/tagsync /out/tagsync

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 -K GID_MAX=65532 tagsync \
 && useradd --uid 65532 --gid 65532 -K UID_MAX=65532 --no-create-home --home-dir /var/lib/tagsync --shell /usr/sbin/nologin tagsync \
 && install -d -o 65532 -g 65532 /var/lib/tagsync
COPY --from=build /out/tagsync /usr/local/bin/tagsync
USER 65532:65532
WORKDIR /var/lib/tagsync
ENTRYPOINT ["/usr/local/bin/tagsync"]
CMD ["sync"]
