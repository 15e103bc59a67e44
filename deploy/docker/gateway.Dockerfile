# syntax=docker/dockerfile:1
# likeness-gateway: public gRPC API, job queue and pipeline orchestration
# Build from the repository root, after the base image:
#   docker build -f deploy/docker/gateway.Dockerfile --build-arg BASE_IMAGE=ghcr.io/likeness/likeness-base:0.1.0 \
#     -t ghcr.io/likeness/likeness-gateway:0.1.0 .
ARG BASE_IMAGE=ghcr.io/likeness/likeness-base:0.1.0
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="likeness-gateway" \
      org.opencontainers.image.description="public gRPC API, job queue and pipeline orchestration" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV LIKENESS_GRPC_PORT=50051 \
    LIKENESS_METRICS_PORT=9101
EXPOSE 50051 9101
# No HEALTHCHECK: Kubernetes probes grpc.health.v1 natively (grpc probe on port 50051).
CMD ["python", "-m", "services.gateway.server"]
