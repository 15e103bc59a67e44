#!/usr/bin/env bash
# Builds every image from the repository root, base first (the service images start FROM it).
#   LIKENESS_IMAGE_REGISTRY (default ghcr.io/likeness), LIKENESS_IMAGE_TAG (default 0.1.0)
#   LIKENESS_DOCKER_PUSH=1 also pushes them.
set -euo pipefail
cd "$(dirname "$0")/../.."
registry="${LIKENESS_IMAGE_REGISTRY:-ghcr.io/likeness}"
tag="${LIKENESS_IMAGE_TAG:-0.1.0}"
base="$registry/likeness-base:$tag"

docker build -f deploy/docker/base.Dockerfile -t "$base" .
images=("$base")
for svc in gateway tts expression render; do
  docker build -f "deploy/docker/$svc.Dockerfile" --build-arg "BASE_IMAGE=$base" -t "$registry/likeness-$svc:$tag" .
  images+=("$registry/likeness-$svc:$tag")
done
docker build -f deploy/docker/triton.Dockerfile -t "$registry/likeness-triton:$tag" .
images+=("$registry/likeness-triton:$tag")

if [ "${LIKENESS_DOCKER_PUSH:-0}" = "1" ]; then
  for image in "${images[@]}"; do docker push "$image"; done
fi
printf 'built %s\n' "${images[@]}"
