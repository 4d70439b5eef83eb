#!/usr/bin/env bash
# Checks the Helm chart packaging/helm/gpulse: lint, render for every values file of
# packaging/helm/gpulse/ci/, values.schema.json, every rendered object against the Kubernetes
# schemas (1.30 and the newest), the Prometheus Operator objects against their CRD fields, the
# shipped promtool tests against the rendered PrometheusRules, the NPD plugin config, the
# rendered environment through `gpulse config check`, and each entry's privileges
# (.ci/helm_check.py). Helm itself is Helm's Go SDK from PyPI (helm-python-sdk, no helm binary
# or Go needed); kubernetes-validate carries the Kubernetes schemas. Needs promtool and
# openssl; uses GPULSE_BIN, else target/debug/gpulse (built by `cargo test`; built here if
# missing). Fails on the first broken setup step and after all checks on any failed check.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${TMPDIR:-/tmp}/gpulse-helm-venv"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "helm-python-sdk==0.2.2" "kubernetes-validate==1.37.0" "jsonschema>=4.18" "PyYAML>=6"
"$venv/bin/python" -c \
    'import helm_python as h; print("helm-python-sdk", h.helm_c_version(), "Helm SDK", h.helm_sdk_version())'

command -v promtool >/dev/null || { echo "helm.sh: promtool is missing (apt-get install prometheus)" >&2; exit 1; }
if ! command -v openssl >/dev/null; then
    apt-get install -y --no-install-recommends openssl
fi

if [[ -z "${GPULSE_BIN:-}" ]]; then
    GPULSE_BIN="${CARGO_TARGET_DIR:-target}/debug/gpulse"
    if [[ ! -x "$GPULSE_BIN" ]]; then
        cargo build --quiet --bin gpulse
    fi
fi
export GPULSE_BIN
"$GPULSE_BIN" --version

"$venv/bin/python" .ci/helm_check.py
