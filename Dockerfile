# For people who build with Docker. hack/image.sh builds the same image without a daemon
# (umoci + skopeo) and pushes it to a registry.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2 x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools
WORKDIR /src
COPY . .
# `--build-arg FEATURES=otel` for OpenTelemetry traces.
ARG FEATURES=""
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin sandman --features "$FEATURES"

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/sandman /sandman
USER 65532:65532
ENTRYPOINT ["/sandman"]
CMD ["run"]
