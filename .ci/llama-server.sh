#!/usr/bin/env bash
# Builds llama.cpp's real `llama-server` and generates a tiny random-weight GGUF for the
# real-server tests (tests/it/real_servers.rs). Nothing comes from outside PyPI: the
# llama-cpp-python sdist vendors all of llama.cpp (tools/server, gguf-py, vocab-only GGUFs),
# and cmake, ninja and numpy come as wheels.
#
#   eval "$(.ci/llama-server.sh)"    # prints `export GPULSE_LLAMA_SERVER=... GPULSE_TINY_GGUF=...`
#   source .ci/llama-server.sh       # the same, run in a child shell so `set -e` does not leak
#
# Logs go to stderr, the export lines to stdout. Everything lands in a cache dir
# (GPULSE_CI_CACHE, default $XDG_CACHE_HOME/gpulse-ci), in entries named by a key of what built
# them and moved into place only when complete, so a second run (a cache hit) neither downloads
# nor builds anything and an interrupted run leaves no half entry behind.

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

LLAMA_CPP_PYTHON_VERSION=0.3.36
# GGML_NATIVE=OFF: ggml then compiles for a fixed x86-64 set (AVX2, FMA, F16C: Intel Haswell,
# AMD Excavator and later) instead of -march=native, so the cached binary does not depend on
# this CPU's flags and the key needs no hash of them; speed does not matter for a 4 M-parameter
# model. A static build (BUILD_SHARED_LIBS=OFF) keeps the binary self-contained once moved out
# of the build tree, and without OpenMP it needs nothing beyond libc/libstdc++. CURL/OpenSSL
# off: no model downloads, no TLS, fewer system dependencies.
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=OFF
    -DGGML_OPENMP=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${GPULSE_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/gpulse-ci}
PYTHON=${PYTHON:-python3}
GENERATOR=$ROOT/tests/fixtures/make_tiny_gguf.py

log() { echo "llama-server.sh: $*" >&2; }
short_hash() { sha256sum | cut -c1-12; }

mkdir -p "$CACHE"

# The compiler is part of the key too: a new gcc would build a different binary.
cc_version=$( (c++ --version 2>/dev/null || echo none) | head -n 1)
SERVER_KEY=$(printf '%s\n' "$LLAMA_CPP_PYTHON_VERSION" "$(uname -m)" "$cc_version" "${CMAKE_FLAGS[@]}" | short_hash)
SERVER_DIR=$CACHE/llama-server-$LLAMA_CPP_PYTHON_VERSION-$SERVER_KEY
# The model depends on the generator and on the vocab it copies (part of the sdist version).
MODEL_KEY=$( (echo "$LLAMA_CPP_PYTHON_VERSION"; cat "$GENERATOR") | short_hash)
MODEL=$CACHE/tiny-gguf-$MODEL_KEY/tiny-llama.gguf

# A venv with the build and generator tools, shared by every entry (idempotent).
tools_venv() {
    local venv=$CACHE/tools-venv
    if ! { "$venv/bin/cmake" --version && "$venv/bin/ninja" --version &&
        "$venv/bin/python" -c 'import numpy, yaml'; } >/dev/null 2>&1; then
        log "creating the tools venv (cmake, ninja; numpy, pyyaml for gguf-py) in $venv"
        "$PYTHON" -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check cmake ninja numpy pyyaml >&2
    fi
    echo "$venv"
}

# The temp dir of the entry being made; global so the EXIT trap still sees it.
tmp=""
# Whatever happens, no half-made entry stays behind.
trap 'if [[ -n $tmp ]]; then rm -rf "$tmp"; fi' EXIT

build_server() {
    local venv sdist src
    venv=$(tools_venv)
    tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
    log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist"
    # --no-deps with the exact pin: only this sdist. Not --no-binary :all:, which would build
    # pip's build dependencies (cmake itself) from source.
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        --dest "$tmp/dl" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
    sdist=$(ls "$tmp"/dl/llama_cpp_python-*.tar.gz)
    tar -xzf "$sdist" -C "$tmp"
    src=$tmp/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp
    log "building llama-server (a few minutes on 2 cores)"
    PATH=$venv/bin:$PATH cmake -S "$src" -B "$tmp/build" -G Ninja "${CMAKE_FLAGS[@]}" >&2
    PATH=$venv/bin:$PATH cmake --build "$tmp/build" -j "$(nproc)" -t llama-server >&2
    # Keep what a cache hit needs without the sdist: the binary, gguf-py and the vocab.
    mkdir -p "$tmp/entry"
    cp "$tmp/build/bin/llama-server" "$tmp/entry/"
    cp -r "$src/gguf-py" "$tmp/entry/gguf-py"
    cp "$src/models/ggml-vocab-llama-spm.gguf" "$tmp/entry/"
    "$tmp/entry/llama-server" --version >&2
    # rename(2) is atomic: the entry appears whole or not at all. A concurrent run that won
    # the race keeps its own entry.
    mv -T "$tmp/entry" "$SERVER_DIR" 2>/dev/null || log "another run installed $SERVER_DIR first"
    rm -rf "$tmp"
    tmp=""
}

generate_model() {
    local venv
    venv=$(tools_venv)
    tmp=$(mktemp -d "$CACHE/.model.XXXXXX")
    chmod 755 "$tmp" # mktemp makes it 0700; it becomes the entry itself
    log "generating the tiny GGUF"
    PYTHONPATH=$SERVER_DIR/gguf-py "$venv/bin/python" "$GENERATOR" \
        "$SERVER_DIR/ggml-vocab-llama-spm.gguf" "$tmp/tiny-llama.gguf" >&2
    mv -T "$tmp" "$(dirname "$MODEL")" 2>/dev/null || log "another run generated $MODEL first"
    rm -rf "$tmp"
    tmp=""
}

# An entry that is incomplete or whose binary no longer starts (a damaged file, a removed
# libstdc++) is rebuilt.
if [[ -f $SERVER_DIR/ggml-vocab-llama-spm.gguf && -d $SERVER_DIR/gguf-py ]] &&
    "$SERVER_DIR/llama-server" --version >/dev/null 2>&1; then
    log "cache hit: $SERVER_DIR"
else
    rm -rf "$SERVER_DIR"
    build_server
fi
if [[ -f $MODEL ]]; then
    log "cache hit: $MODEL"
else
    generate_model
fi

echo "export GPULSE_LLAMA_SERVER=$(printf '%q' "$SERVER_DIR/llama-server")"
echo "export GPULSE_TINY_GGUF=$(printf '%q' "$MODEL")"
