#!/usr/bin/env bash
# Validates packaging/akash/deploy.yaml with Akash's own SDL validator (validateSDL from the npm
# package @akashnetwork/chain-sdk) and checks that broken copies are rejected
# (.ci/akash-sdl.mjs). The package goes into a scratch prefix, reused while its version matches.
# Installs Debian's node and npm when missing (the package asks for Node >= 22; it
# validates fine on Node 20, warning about the engine).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION=1.0.0-alpha.25
PREFIX="${TMPDIR:-/tmp}/gpulse-akash-sdk"
MANIFEST="$PREFIX/node_modules/@akashnetwork/chain-sdk/package.json"

# The CI machine may have no Node: Debian 12's nodejs and npm are enough.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get install -y --no-install-recommends nodejs npm
fi
node --version

if [[ -f $MANIFEST ]] && grep -q "\"version\": \"$VERSION\"" "$MANIFEST"; then
    echo "@akashnetwork/chain-sdk@$VERSION already in $PREFIX"
else
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error \
        "@akashnetwork/chain-sdk@$VERSION"
fi

node .ci/akash-sdl.mjs "$PREFIX" packaging/akash/deploy.yaml
