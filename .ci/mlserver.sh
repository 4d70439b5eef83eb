#!/usr/bin/env bash
# Installs MLServer (Seldon's KServe V2 server, the same HTTP endpoints as Triton) from PyPI in
# a venv and writes the model repository of the real-server tests (tests/it/real_servers.rs):
# `iris`, an sklearn LogisticRegression trained here on scikit-learn's bundled data, and `echo`,
# a custom model whose load() sleeps ECHO_LOAD_DELAY seconds. The repository is a template:
# the tests copy it into a temp dir and add their own settings.json (ports).
#
#   eval "$(.ci/mlserver.sh)"    # prints `export GPULSE_MLSERVER=... GPULSE_MLSERVER_MODELS=...`
#   source .ci/mlserver.sh       # the same, run in a child shell so `set -e` does not leak
#
# Logs go to stderr, the export lines to stdout. Both live in the cache dir (GPULSE_CI_CACHE,
# default $XDG_CACHE_HOME/gpulse-ci) under keys of what made them, so a second run installs
# nothing.

# Sourced: run in a child shell and take only its export lines.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    if __gpulse_exports=$(bash "${BASH_SOURCE[0]}"); then
        eval "$__gpulse_exports"
        unset __gpulse_exports
        return 0
    fi
    unset __gpulse_exports
    return 1
fi

set -euo pipefail

# uvloop 0.22+ kills every MLServer 1.7.1 inference worker at start ("There is no current event
# loop" in mlserver/parallel/worker.py), so the server drops its models and exits.
# scikit-learn is pinned so the joblib file and the server that unpickles it always match.
PACKAGES=(mlserver==1.7.1 mlserver-sklearn==1.7.1 'uvloop<0.22' scikit-learn==1.7.2)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=$ROOT/tests/fixtures/mlserver
CACHE=${GPULSE_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/gpulse-ci}
PYTHON=${PYTHON:-python3}

log() { echo "mlserver.sh: $*" >&2; }
short_hash() { sha256sum | cut -c1-12; }

mkdir -p "$CACHE"

VENV_KEY=$( ("$PYTHON" --version; printf '%s\n' "${PACKAGES[@]}") | short_hash)
VENV=$CACHE/mlserver-venv-$VENV_KEY
MODELS_KEY=$( (echo "$VENV_KEY"; cd "$FIXTURES" && find . -type f ! -name '*.pyc' | LC_ALL=C sort | xargs cat) | short_hash)
MODELS=$CACHE/mlserver-models-$MODELS_KEY

# A venv is not relocatable (its scripts hold absolute paths), so it cannot be built aside and
# renamed: a marker written last says it is complete, and one without it is made again. So is
# one whose interpreter is gone (Python upgraded) or that was moved (the entry script's #!
# names another path).
venv_ok() {
    [[ -f $VENV/.complete && -x $VENV/bin/python3 ]] &&
        [[ $(head -n 1 "$VENV/bin/mlserver") == "#!$VENV/bin/python"* ]]
}
if venv_ok; then
    log "cache hit: $VENV"
else
    rm -rf "$VENV"
    log "installing ${PACKAGES[*]} into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
    "$VENV/bin/mlserver" --version >&2
    touch "$VENV/.complete"
fi

if [[ -d $MODELS ]]; then
    log "cache hit: $MODELS"
else
    tmp=$(mktemp -d "$CACHE/.models.XXXXXX")
    # Whatever happens, no half-written repository stays behind.
    trap 'rm -rf "$tmp"' EXIT
    chmod 755 "$tmp" # mktemp makes it 0700; it becomes the entry itself
    cp -r "$FIXTURES/iris" "$FIXTURES/echo" "$tmp/"
    "$VENV/bin/python" "$FIXTURES/train_iris.py" "$tmp/iris"
    # Complete or absent: rename(2) is atomic; a concurrent run that won keeps its own.
    mv -T "$tmp" "$MODELS" 2>/dev/null || log "another run wrote $MODELS first"
    rm -rf "$tmp"
    trap - EXIT
    log "model repository: $MODELS"
fi

echo "export GPULSE_MLSERVER=$(printf '%q' "$VENV/bin/mlserver")"
echo "export GPULSE_MLSERVER_MODELS=$(printf '%q' "$MODELS")"
