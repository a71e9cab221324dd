# pipelet in a container: the release binary built from this checkout, in a small
# Debian image that holds only the binary and the CA certificates (for S3/GCS/Azure
# and PostgreSQL over TLS). See docs/deployment.md, "Containers".
#
#   docker build -t pipelet .
#   docker run -p 8080:8080 -v pipelet-data:/var/lib/pipelet pipelet
#
# Targets: `pipelet` (the default, last stage: API server, CPU preview worker, key
# tool) and `pipelet-wan` (the GPU worker with the Wan runner's Python environment):
#
#   docker build --target pipelet-wan -t pipelet-wan .
#
# The cache mounts need BuildKit (the default builder since Docker 23).

# The Rust compiler of the build stage; the workspace needs 1.89 or newer.
ARG RUST_VERSION=1.95

# ---- build: the workspace, compiled once ----
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches make rebuilds incremental; the binary is copied out of
# the cache mount because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p pipelet --locked \
    && install -m 0755 target/release/pipelet /usr/local/bin/pipelet

# ---- pipelet-wan: the GPU worker (needs the NVIDIA container toolkit on the host) ----
# The PyPI torch wheel brings its own CUDA libraries. Mount the weights at /models.
FROM python:3.11-slim-bookworm AS pipelet-wan
RUN groupadd --system --gid 10001 pipelet \
    && useradd --system --uid 10001 --gid pipelet --home-dir /var/lib/pipelet --create-home \
       --shell /usr/sbin/nologin pipelet
COPY runners/wan/requirements.txt /opt/pipelet/runners/wan/requirements.txt
RUN python -m venv /opt/pipelet-wan \
    && /opt/pipelet-wan/bin/pip install --no-cache-dir -r /opt/pipelet/runners/wan/requirements.txt
COPY runners/wan/pipelet_wan /opt/pipelet/runners/wan/pipelet_wan
COPY --from=build /usr/local/bin/pipelet /usr/local/bin/pipelet
ENV PIPELET_RUNNER=wan \
    PIPELET_WAN_PYTHON=/opt/pipelet-wan/bin/python \
    PIPELET_WAN_RUNNER_DIR=/opt/pipelet/runners/wan \
    HF_HOME=/var/lib/pipelet/hf
WORKDIR /var/lib/pipelet
# A number, not a name: Kubernetes' runAsNonRoot can only check a numeric user.
USER 10001:10001
ENTRYPOINT ["pipelet"]
CMD ["worker"]

# ---- pipelet: the API server image (the default target) ----
# The binary needs glibc, libgcc and libstdc++ (the H.264 encoder is C++), all in the
# slim image already; ca-certificates is the one addition.
FROM debian:bookworm-slim AS pipelet
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pipelet \
    && useradd --system --uid 10001 --gid pipelet --home-dir /var/lib/pipelet --create-home \
       --shell /usr/sbin/nologin pipelet
COPY --from=build /usr/local/bin/pipelet /usr/local/bin/pipelet
# Listen on every interface of the container (the binary's default is 127.0.0.1, which
# nothing outside the container can reach); keep the SQLite file, the blobs and
# admin.key in the volume.
ENV PIPELET_LISTEN=0.0.0.0:8080 \
    PIPELET_DATA_DIR=/var/lib/pipelet
WORKDIR /var/lib/pipelet
VOLUME /var/lib/pipelet
EXPOSE 8080
USER 10001:10001
ENTRYPOINT ["pipelet"]
CMD ["serve"]
