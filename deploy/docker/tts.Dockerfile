# syntax=docker/dockerfile:1
# likeness-tts: text to speech with phone timings
# Build from the repository root, after the base image:
#   docker build -f deploy/docker/tts.Dockerfile --build-arg BASE_IMAGE=ghcr.io/likeness/likeness-base:0.1.0 \
#     -t ghcr.io/likeness/likeness-tts:0.1.0 .
ARG BASE_IMAGE=ghcr.io/likeness/likeness-base:0.1.0
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="likeness-tts" \
      org.opencontainers.image.description="text to speech with phone timings" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV LIKENESS_GRPC_PORT=50052 \
    LIKENESS_METRICS_PORT=9102
EXPOSE 50052 9102
# No HEALTHCHECK: Kubernetes probes grpc.health.v1 natively (grpc probe on port 50052).
CMD ["python", "-m", "services.tts.server"]
