#!/usr/bin/env bash
# What the quality benchmarks evaluate on, never trained on: flite and festival (Debian packages, run as
# programs) and the real recordings inside the pocketsphinx 5.1.1 sdist (LibriVox readers, the "cards"
# and "goforward" speakers), unpacked to ~/.cache/likeness/pocketsphinx-5.1.1 (LIKENESS_POCKETSPHINX_SDIST).
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEST=${LIKENESS_POCKETSPHINX_SDIST:-$HOME/.cache/likeness/pocketsphinx-5.1.1}

if ! command -v flite >/dev/null || ! command -v festival >/dev/null; then
  echo "installing flite and festival"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    flite festival festvox-kallpc16k >/dev/null
fi

if [ ! -d "$DEST/test/data/librivox" ] || [ ! -e "$DEST/test/data/cards" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$tmp" pocketsphinx==5.1.1
  rm -rf "$DEST" && mkdir -p "$(dirname "$DEST")"
  tar -xzf "$tmp"/pocketsphinx-5.1.1.tar.gz -C "$(dirname "$DEST")"
  echo "pocketsphinx sdist test data in $DEST/test/data"
fi
