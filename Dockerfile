# syntax=docker/dockerfile:1
# Build the manager: a static Go binary on a distroless, non-root base.
#   make docker-build IMG=<registry>/fluxjob-operator:<tag>
FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH

WORKDIR /workspace
# Dependencies first, so that source changes do not re-download modules.
COPY go.mod go.sum ./
RUN go mod download

# Only Go sources reach the build context (see .dockerignore).
COPY . .

# CGO_ENABLED=0: a static binary that needs no libc in the runtime image.
# GOARCH is left empty when TARGETARCH is unset so that the build host's
# architecture is used.
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o manager .

# distroless/static: no shell, no package manager; "nonroot" is uid/gid 65532,
# the same uid the Flux sidecar runs as in config/manager/manager.yaml (the
# broker only grants the owner role to its own uid).
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager /manager
USER 65532:65532

ENTRYPOINT ["/manager"]
