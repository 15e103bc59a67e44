# syntax=docker/dockerfile:1
# likeness-render: photo + blendshape frames to H.264 video
# Build from the repository root, after the base image:
#   docker build -f deploy/docker/render.Dockerfile --build-arg BASE_IMAGE=ghcr.io/likeness/likeness-base:0.1.0 \
#     -t ghcr.io/likeness/likeness-render:0.1.0 .
ARG BASE_IMAGE=ghcr.io/likeness/likeness-base:0.1.0
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="likeness-render" \
      org.opencontainers.image.description="photo + blendshape frames to H.264 video" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV LIKENESS_GRPC_PORT=50054 \
    LIKENESS_METRICS_PORT=9104
EXPOSE 50054 9104
# No HEALTHCHECK: Kubernetes probes grpc.health.v1 natively (grpc probe on port 50054).
CMD ["python", "-m", "services.render.server"]
