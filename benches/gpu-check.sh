#!/usr/bin/env bash
# Real-driver check for a lent GPU machine: one call, no toolchain needed there.
#
# Usage (from the repository root, with the release binary built here and carried):
#   benches/gpu-check.sh [SECONDS=20]
# Writes everything under $OUT (or a temp dir) and prints a short summary:
#   - nvidia-smi's view (driver, GPUs, the values gpulse also reads) for comparison;
#   - `gpulse scan` (table, exit code) and `gpulse scan --json`;
#   - `gpulse run` on the real libnvidia-ml for SECONDS with dcgm_compat and PCIe throughput on:
#     /metrics, /v1/snapshot, /v1/health captures, NVML cycle time (collector duration),
#     /metrics latency over 200 keep-alive requests, RSS, CPU time and threads;
#   - optionally a GPU load (torch matmul, when python3 has torch) to see utilization, clocks,
#     power and throttle reasons move;
#   - whether the kernel log is readable and which Xids it holds.
# Needs: bash, python3 (stdlib) or curl; nvidia-smi for the comparison (optional).
set -uo pipefail

SECONDS_RUN=${1:-20}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$(mktemp -d -t gpulse-gpu-check.XXXXXX)}
mkdir -p "$OUT"
bin=${GPULSE_BIN:-target/release/gpulse}
port=${GPULSE_CHECK_PORT:-19412}
addr="127.0.0.1:$port"
summary="$OUT/summary.txt"
: >"$summary"

say() { echo "$*" | tee -a "$summary"; }
section() { echo; echo "== $*"; }

for var in $(compgen -e); do
    [[ $var == GPULSE_* || $var == OTEL_* ]] && unset "$var"
done

section "machine"
uname -a | tee "$OUT/uname.txt"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
    nvidia-smi -q >"$OUT/nvidia-smi-q.txt" 2>&1
    nvidia-smi --query-gpu=index,uuid,name,driver_version,pci.bus_id,memory.total,memory.used,temperature.gpu,temperature.memory,power.draw,power.limit,clocks.sm,clocks.mem,clocks.max.sm,utilization.gpu,pstate,ecc.mode.current,mig.mode.current,clocks_throttle_reasons.active \
        --format=csv >"$OUT/nvidia-smi-query.csv" 2>&1
    cat "$OUT/nvidia-smi-query.csv"
    say "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)"
else
    say "nvidia-smi: not found"
fi
"$bin" --version | tee -a "$summary"
ls -l "$bin"

section "scan"
start=$(date +%s.%N)
"$bin" scan >"$OUT/scan.txt" 2>"$OUT/scan.err"
rc=$?
took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.3f", e - s }')
cat "$OUT/scan.txt" "$OUT/scan.err"
say "scan: exit $rc in ${took}s"
"$bin" scan --json >"$OUT/scan.json" 2>/dev/null
say "scan --json: exit $? ($(wc -c <"$OUT/scan.json") bytes)"

section "run"
cat >"$OUT/gpulse.toml" <<EOF
[gpu]
interval = "1s"
pcie_throughput = true
[prometheus]
dcgm_compat = true
[http]
listen = "$addr"
EOF
"$bin" config check "$OUT/gpulse.toml" | tee -a "$summary"
"$bin" run --config "$OUT/gpulse.toml" 2>"$OUT/agent.log" &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null' EXIT

get() { # get PATH FILE
    if command -v python3 >/dev/null; then
        python3 - "$addr" "$1" "$2" <<'PY'
import sys, urllib.request
addr, path, out = sys.argv[1:4]
try:
    body = urllib.request.urlopen(f"http://{addr}{path}", timeout=10).read()
except Exception as e:  # noqa: BLE001 - a check script reports, it does not stop
    body = f"error: {e}\n".encode()
open(out, "wb").write(body)
PY
    else
        curl -s --max-time 10 "http://$addr$1" -o "$2"
    fi
}

sleep 3
load_pid=""
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    say "load: torch matmul on every GPU for $((SECONDS_RUN / 2))s"
    python3 - "$((SECONDS_RUN / 2))" <<'PY' >"$OUT/load.log" 2>&1 &
import sys, time, torch
end = time.time() + float(sys.argv[1])
xs = [torch.randn(8192, 8192, device=f"cuda:{i}", dtype=torch.float16) for i in range(torch.cuda.device_count())]
while time.time() < end:
    for x in xs:
        x @ x
    torch.cuda.synchronize()
PY
    load_pid=$!
    sleep $((SECONDS_RUN / 2 - 2))
    get /metrics "$OUT/metrics-under-load.txt"
    get /v1/snapshot "$OUT/snapshot-under-load.json"
    wait "$load_pid" 2>/dev/null
    sleep 3
else
    say "load: none (no torch with CUDA in python3)"
    sleep "$SECONDS_RUN"
fi

get /metrics "$OUT/metrics.txt"
get /v1/snapshot "$OUT/snapshot.json"
get /v1/health "$OUT/health.json"
command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=index,memory.used,temperature.gpu,power.draw,clocks.sm,utilization.gpu \
        --format=csv >"$OUT/nvidia-smi-after.csv" 2>&1

say "series: $(grep -vc '^#' "$OUT/metrics.txt") in $(wc -c <"$OUT/metrics.txt") bytes"
grep -E '^gpulse_collector_(success|duration_seconds|stale)\{' "$OUT/metrics.txt" | tee -a "$summary"
grep -E '^gpulse_gpu_(power_watts|temperature_celsius|memory_used_bytes|utilization_ratio|clock_hertz)\{' "$OUT/metrics.txt" | head -n 24 | tee -a "$summary"
grep -E '^gpulse_gpu_(health|throttle_active)\{' "$OUT/metrics.txt" | grep -v ' 0$' | tee -a "$summary"
[[ -f $OUT/metrics-under-load.txt ]] &&
    grep -E '^gpulse_gpu_(utilization_ratio|power_watts|clock_hertz|throttle_active)\{' "$OUT/metrics-under-load.txt" | grep -v ' 0$' | head -n 40 | tee "$OUT/under-load-summary.txt"
say "dcgm families: $(grep -c '^# TYPE DCGM_' "$OUT/metrics.txt")"

if command -v python3 >/dev/null; then
    python3 - "$addr" <<'PY' | tee -a "$summary"
import http.client, sys, time
host, port = sys.argv[1].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=10)
times = []
for _ in range(200):
    t = time.perf_counter()
    conn.request("GET", "/metrics")
    conn.getresponse().read()
    times.append(time.perf_counter() - t)
times.sort()
print(f"/metrics over 200 keep-alive GETs: p50 {times[100]*1e3:.2f} ms, p99 {times[197]*1e3:.2f} ms")
PY
fi
awk '/VmRSS|VmHWM|Threads/' "/proc/$agent/status" | tr -s ' \t' ' ' | tee -a "$summary"
ticks=$(getconf CLK_TCK)
read -r ut st < <(awk '{ print $14, $15 }' "/proc/$agent/stat")
say "cpu: $(awk -v u="$ut" -v s="$st" -v t="$ticks" -v d="$SECONDS_RUN" 'BEGIN { printf "%.1f ms user+sys over ~%ds run", (u + s) * 1000 / t, d + 5 }')"
grep -iE 'warn|error' "$OUT/agent.log" | head -n 20 | tee -a "$summary"

section "kernel log"
# /dev/kmsg hands out whole records: a read smaller than one fails with EINVAL.
if dd if=/dev/kmsg of=/dev/null bs=8192 count=1 iflag=nonblock 2>/dev/null; then say "kmsg: readable"; else say "kmsg: not readable"; fi
(dmesg 2>/dev/null || true) | grep -i 'NVRM: Xid' | tail -n 20 | tee "$OUT/xids.txt"
say "xid lines in dmesg: $(wc -l <"$OUT/xids.txt")"

echo
echo "== summary ($OUT)"
cat "$summary"
