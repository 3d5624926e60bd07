# syntax=docker/dockerfile:1
# Builds a static zimmer-sidecar and ships it on distroless, non-root.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Module downloads are cached in their own layer, before the source copy.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/zimmer-sidecar ./cmd/zimmer-sidecar

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/zimmer-sidecar /usr/local/bin/zimmer-sidecar
COPY config.example.toml /etc/zimmer-sidecar/config.example.toml
# public (platform and app routes), admin (loopback by default: livez,
# readyz, ledger admin; published only if listen.admin binds beyond it).
EXPOSE 8080 9090
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/zimmer-sidecar"]
CMD ["run", "-config", "/etc/zimmer-sidecar/config.toml"]
