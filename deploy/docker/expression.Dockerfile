# syntax=docker/dockerfile:1
# likeness-expression: speech to ARKit-52 blendshapes and head pose
# Build from the repository root, after the base image:
#   docker build -f deploy/docker/expression.Dockerfile --build-arg BASE_IMAGE=ghcr.io/likeness/likeness-base:0.1.0 \
#     -t ghcr.io/likeness/likeness-expression:0.1.0 .
ARG BASE_IMAGE=ghcr.io/likeness/likeness-base:0.1.0
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="likeness-expression" \
      org.opencontainers.image.description="speech to ARKit-52 blendshapes and head pose" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV LIKENESS_GRPC_PORT=50053 \
    LIKENESS_METRICS_PORT=9103
EXPOSE 50053 9103
# No HEALTHCHECK: Kubernetes probes grpc.health.v1 natively (grpc probe on port 50053).
CMD ["python", "-m", "services.expression.server"]
