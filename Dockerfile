# syntax=docker/dockerfile:1
# Builds a static zimmer-sidecar and ships it on distroless, non-root.
#
#   docker build --build-arg VERSION=1.2.3 -t zimmer-sidecar:1.2.3 .
#
# Multi-platform builds (docker buildx --platform linux/amd64,linux/arm64)
# cross-compile on the build machine's own platform: no emulation.

# The Go release go.mod names.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src
# Module downloads are cached in their own layer, before the source copy,
# so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/zimmer-sidecar ./cmd/zimmer-sidecar
# The state directory's skeleton, owned by the runtime user below.
RUN mkdir -p /out/state/data

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot
# (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="zimmer-sidecar" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/zimmer-sidecar /usr/local/bin/zimmer-sidecar
# The reference of every key; mount the real file at
# /etc/zimmer-sidecar/config.toml (a ConfigMap, or docker run -v).
COPY config.example.toml /etc/zimmer-sidecar/config.example.toml
# The working directory holds the state: the config's default paths
# ./data/ledger.db and ./data/acme land in /var/lib/zimmer-sidecar/data,
# writable by the runtime user. Mount a volume on that data directory: a
# new Docker volume takes its ownership from the image. (Kubernetes mounts
# on /var/lib/zimmer-sidecar itself, made writable by fsGroup.)
COPY --from=build --chown=65532:65532 /out/state /var/lib/zimmer-sidecar
WORKDIR /var/lib/zimmer-sidecar
# public: the platform's calls and the app's routes (listen.public).
# admin: /livez, /readyz, /metrics, /status and the ledger admin API
# (listen.admin, loopback by default: publish it only when it binds
# beyond, and then the ledger API requires the service token).
# The plain-HTTP listener for ACME (tls.http) has no default port: EXPOSE
# what you configure, e.g. docker run -p 80:8081.
EXPOSE 8080 9090
# Numeric, so Kubernetes can verify runAsNonRoot without a runAsUser.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/zimmer-sidecar"]
CMD ["run", "-config", "/etc/zimmer-sidecar/config.toml"]
