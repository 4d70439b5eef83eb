#!/usr/bin/env bash
# Checks a built gpulse binary for the architecture it claims and the oldest glibc it runs on:
#
#   packaging/check-elf.sh BINARY x86_64|aarch64 [MAX_GLIBC]
#
# * the ELF header: 64-bit, little-endian, the expected machine, a dynamic loader of that
#   architecture (so it is not an x86_64 binary copied under an arm64 name);
# * the highest GLIBC_x.y symbol version it asks for is at most MAX_GLIBC (default 2.31:
#   Debian 11, Ubuntu 20.04, RHEL 9 and the CUDA/vLLM/TGI/Triton images run it);
# * the shared libraries it needs are only glibc's and libgcc_s (NVML is dlopen'ed at run time,
#   never linked).
#
# Prints one line per check and exits 1 on the first failure. CI runs it on the x86_64 and
# aarch64 builds (`cargo zigbuild --target <arch>-unknown-linux-gnu.2.31`); it needs binutils'
# readelf, which reads either architecture's ELF on any host.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 BINARY x86_64|aarch64 [MAX_GLIBC]" >&2
    exit 2
fi
binary=$1
arch=$2
max_glibc=${3:-2.31}

case $arch in
x86_64)
    machine='Advanced Micro Devices X86-64'
    loader='/lib64/ld-linux-x86-64.so.2'
    ;;
aarch64)
    machine='AArch64'
    loader='/lib/ld-linux-aarch64.so.1'
    ;;
*)
    echo "unknown architecture '$arch' (x86_64 or aarch64)" >&2
    exit 2
    ;;
esac

fail() {
    echo "FAIL $binary: $*" >&2
    exit 1
}

[[ -f $binary ]] || fail "no such file"

header=$(readelf -h "$binary") || fail "not an ELF file"
field() { awk -F': *' -v k="$1" '$1 ~ "^ *" k "$" { print $2; exit }' <<<"$header"; }

[[ $(field Class) == ELF64 ]] || fail "class $(field Class), expected ELF64"
[[ $(field Data) == *"little endian"* ]] || fail "data $(field Data), expected little endian"
[[ $(field Machine) == "$machine" ]] || fail "machine '$(field Machine)', expected '$machine'"
echo "ok   $binary: ELF64 little-endian $(field Machine), type $(field Type)"

interp=$(readelf -lW "$binary" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')
[[ $interp == "$loader" ]] || fail "program interpreter '$interp', expected '$loader'"
echo "ok   $binary: interpreter $interp"

# The highest GLIBC_x.y[.z] version any symbol needs, compared as version numbers.
newest=$(readelf -VW "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
[[ -n $newest ]] || fail "no GLIBC symbol versions found (not a glibc binary?)"
if [[ $(printf '%s\n%s\n' "$newest" "$max_glibc" | sort -V | tail -n 1) != "$max_glibc" ]]; then
    offenders=$(readelf -VW "$binary" | grep -o "GLIBC_$newest" | sort -u | tr '\n' ' ')
    fail "needs glibc $newest ($offenders), newer than the $max_glibc baseline"
fi
echo "ok   $binary: newest glibc symbol version $newest <= $max_glibc"

allowed='^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$'
needed=$(readelf -dW "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
while read -r lib; do
    [[ -z $lib ]] && continue
    [[ $lib =~ $allowed ]] || fail "links $lib; only glibc and libgcc_s are allowed (NVML is dlopen'ed)"
done <<<"$needed"
echo "ok   $binary: needs only $(tr '\n' ' ' <<<"$needed")"
