# syntax=docker/dockerfile:1

# Build stage: the toolchain matches the one the project is developed and tested with.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY crates ./crates
# The web page's files are built into the binary (include_bytes!).
COPY assets ./assets
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/webhook-inbox /webhook-inbox \
    && mkdir /data

# Runtime stage: glibc and libgcc only, no shell, runs as the distroless "nonroot" user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /webhook-inbox /usr/local/bin/webhook-inbox
# An empty /data owned by the runtime user: a named volume mounted there inherits the ownership.
COPY --from=build --chown=65532:65532 /data /data
ENV DATABASE_URL=sqlite:////data/app.db \
    HOST=0.0.0.0 \
    PORT=8000
VOLUME ["/data"]
EXPOSE 8000
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/webhook-inbox"]
CMD ["serve"]
