#!/usr/bin/env bash
# Real-driver check for a lent GPU machine: one call of a few minutes, no toolchain needed there.
#
# Here (with the toolchain), once per change:
#   benches/gpu-check.sh --prepare
#     builds target/release/gpulse and the `it` test binary (release), copies both into
#     .gpu-check/bin/ (ignored through .git/info/exclude) and prints the device call to make.
# There (from the repository root, .gpu-check carried):
#   benches/gpu-check.sh [SECONDS=60]
# Here, on the fake NVML (what CI and a machine without a GPU can check):
#   benches/gpu-check.sh --fake [SECONDS]      (compiles tests/fake_nvml with cc)
#   benches/gpu-check.sh --nvml-lib PATH [SECONDS]
#
# Binaries: $GPULSE_BIN or --bin PATH (default .gpu-check/bin/gpulse, else target/release/gpulse);
# the test binary $GPULSE_IT_BIN or --it-bin PATH (default .gpu-check/bin/it; none: tests skipped).
#
# What it does, all written under $OUT (or a temp dir):
#   - nvidia-smi's view (driver, GPUs, the values gpulse also reads) for comparison;
#   - the `GPULSE_REAL_GPU=1` tests of the `it` binary (`real_gpu` filter: a plausible sample,
#     and each NVML call's time against the cycle, target cycle <= 1.1x the sum of its calls);
#   - `gpulse scan` (table, exit code) and `gpulse scan --json`;
#   - SECONDS of `gpulse run` (dcgm_compat and PCIe throughput on, GPULSE_NVML_TIMING=1), scraped
#     every second: /metrics latency and size, RSS and CPU time per second; then 200 keep-alive
#     /metrics GETs, captures of /metrics, /v1/snapshot, /v1/health, and the per-cycle NVML
#     timing summarized (cycle vs. sum of calls, slowest call groups);
#   - NVML GPM (profiling without DCGM): on an H100/H200 (the fake NVML is one) the GPM families
#     (gpulse_gpu_sm_active_ratio, ..._pipe_active_ratio, DCGM_FI_PROF_PIPE_TENSOR_ACTIVE, ...)
#     must be in /metrics, else the script exits 1; they are recorded in gpm.txt (in the
#     archive), and under load;
#   - optionally a GPU load (torch matmul, when python3 has torch) in the middle third;
#   - whether the kernel log is readable and which Xids it holds.
# The device tool brings back at most 8 files from $OUT, so $OUT gets summary.txt, timing.txt,
# tests.txt, scan.json, metrics.txt and everything in gpu-check.tar.gz.
# Needs: bash, python3 (stdlib); nvidia-smi for the comparison (optional); cc for --fake.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
bin=${GPULSE_BIN:-}
it_bin=${GPULSE_IT_BIN:-}
nvml_lib=${GPULSE_NVML_LIB:-}
fake=0
prepare=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --prepare) prepare=1 ;;
    --fake) fake=1 ;;
    --bin) bin=$2; shift ;;
    --it-bin) it_bin=$2; shift ;;
    --nvml-lib) nvml_lib=$2; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
    esac
    shift
done
SECONDS_RUN=${1:-60}

if [[ $prepare == 1 ]]; then
    set -e
    # The real-GPU tests call NVML in-process: the test binary needs no toolchain or source tree
    # there (the tests that spawn `gpulse` or compile the fake NVML are filtered out).
    cargo build --release --bin gpulse
    it=$(cargo test --release --test it --no-run --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "it" and m.get("executable"):
        print(m["executable"])')
    target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    mkdir -p .gpu-check/bin
    grep -qx '/.gpu-check/' .git/info/exclude 2>/dev/null || echo '/.gpu-check/' >>"$(git rev-parse --git-path info/exclude)"
    cp "$target/release/gpulse" .gpu-check/bin/gpulse
    cp "$it" .gpu-check/bin/it
    # Release binaries are stripped by the profile; strip again in case a profile override kept
    # debug info (the carried tree is limited to 64 MiB).
    command -v strip >/dev/null && strip .gpu-check/bin/it .gpu-check/bin/gpulse 2>/dev/null
    du -sh .gpu-check/bin/*
    echo
    echo "Now, with the device tool (one call, about 3 minutes of device time for 60 s):"
    echo "  run(command='benches/gpu-check.sh 60', carry=['.gpu-check'], timeout_s=420)"
    exit 0
fi

if [[ -z $bin ]]; then
    bin=.gpu-check/bin/gpulse
    [[ -x $bin ]] || bin=target/release/gpulse
fi
[[ -z $it_bin && -x .gpu-check/bin/it ]] && it_bin=.gpu-check/bin/it
[[ -x $bin ]] || { echo "gpu-check: no gpulse binary at $bin (run --prepare, or set GPULSE_BIN)" >&2; exit 2; }

OUT=${OUT:-$(mktemp -d -t gpulse-gpu-check.XXXXXX)}
mkdir -p "$OUT"
# Everything goes to $work; $OUT gets a few files and the archive (see above).
work=$(mktemp -d -t gpulse-gpu-check-work.XXXXXX)
port=${GPULSE_CHECK_PORT:-19412}
addr="127.0.0.1:$port"
summary="$work/summary.txt"
: >"$summary"

say() { echo "$*" | tee -a "$summary"; }
section() { echo; echo "== $*"; }

for var in $(compgen -e); do
    [[ $var == GPULSE_* || $var == OTEL_* ]] && unset "$var"
done

if [[ $fake == 1 && -z $nvml_lib ]]; then
    mkdir -p "$work/fake"
    if cc -shared -fPIC -O2 -o "$work/fake/libnvidia-ml.so.1" tests/fake_nvml/fake_nvml.c -ldl -lpthread; then
        # Some latency per call, so the timing has something to measure; poll the config
        # rarely so a stat() per call does not dominate it.
        printf 'gpus=2\nlatency_us=200\nconfig_poll_ms=1000\n' >"$work/fake/fake_nvml.conf"
        nvml_lib="$work/fake/libnvidia-ml.so.1"
    else
        say "fake NVML: cc failed"
        exit 1
    fi
fi
lib_flag=()
[[ -n $nvml_lib ]] && lib_flag=(--nvml-lib "$nvml_lib")

section "machine"
uname -a | tee "$work/uname.txt"
say "nvml: ${nvml_lib:-libnvidia-ml.so.1 of the driver}"
if command -v nvidia-smi >/dev/null && [[ -z $nvml_lib ]]; then
    nvidia-smi >"$work/nvidia-smi.txt" 2>&1
    nvidia-smi -q >"$work/nvidia-smi-q.txt" 2>&1
    nvidia-smi --query-gpu=index,uuid,name,driver_version,pci.bus_id,memory.total,memory.used,temperature.gpu,temperature.memory,power.draw,power.limit,clocks.sm,clocks.mem,clocks.max.sm,utilization.gpu,pstate,ecc.mode.current,mig.mode.current,clocks_throttle_reasons.active \
        --format=csv >"$work/nvidia-smi-query.csv" 2>&1
    cat "$work/nvidia-smi-query.csv"
    say "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)"
else
    say "nvidia-smi: not used"
fi
"$bin" --version | tee -a "$summary"
ls -l "$bin"

section "real-GPU tests"
if [[ -z $it_bin ]]; then
    say "tests: skipped (no it binary: --it-bin, GPULSE_IT_BIN or --prepare)"
    echo "skipped: no it binary" >"$work/tests.txt"
elif [[ -n $nvml_lib ]]; then
    # The real-GPU tests use the driver's library; on a fake they would only skip.
    say "tests: skipped (not on the real driver)"
    echo "skipped: --nvml-lib/--fake" >"$work/tests.txt"
else
    GPULSE_REAL_GPU=1 timeout 120 "$it_bin" real_gpu --test-threads=1 --nocapture >"$work/tests.txt" 2>&1
    rc=$?
    cat "$work/tests.txt"
    say "tests (GPULSE_REAL_GPU=1 it real_gpu): exit $rc, $(grep -E '^test result' "$work/tests.txt" || echo 'no result line')"
    grep -E '^cycle .* ratio ' "$work/tests.txt" | tail -n 3 | tee -a "$summary"
fi

section "scan"
start=$(date +%s.%N)
timeout 60 "$bin" scan "${lib_flag[@]}" >"$work/scan.txt" 2>"$work/scan.err"
rc=$?
took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.3f", e - s }')
cat "$work/scan.txt" "$work/scan.err"
say "scan: exit $rc in ${took}s"
timeout 60 "$bin" scan --json "${lib_flag[@]}" >"$work/scan.json" 2>/dev/null
say "scan --json: exit $? ($(wc -c <"$work/scan.json") bytes)"

section "run (${SECONDS_RUN}s, scraped every second)"
cat >"$work/gpulse.toml" <<EOF
[gpu]
interval = "1s"
pcie_throughput = true
[prometheus]
dcgm_compat = true
[http]
listen = "$addr"
[log]
format = "json"
EOF
"$bin" config check "$work/gpulse.toml" | tee -a "$summary"
GPULSE_NVML_TIMING=1 "$bin" run --config "$work/gpulse.toml" "${lib_flag[@]}" 2>"$work/agent.log" &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null' EXIT

get() { # get PATH FILE
    python3 - "$addr" "$1" "$2" <<'PY'
import sys, urllib.request
addr, path, out = sys.argv[1:4]
try:
    body = urllib.request.urlopen(f"http://{addr}{path}", timeout=10).read()
except Exception as e:  # noqa: BLE001 - a check script reports, it does not stop
    body = f"error: {e}\n".encode()
open(out, "wb").write(body)
PY
}

# Wait for the server (at most 10 s), not a fixed sleep.
for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.1
done

load_pid=""
if [[ -z $nvml_lib ]] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    third=$((SECONDS_RUN / 3))
    say "load: torch matmul on every GPU from ${third}s to $((2 * third))s"
    (sleep "$third"; exec python3 - "$third" <<'PY'
import sys, time, torch
end = time.time() + float(sys.argv[1])
xs = [torch.randn(8192, 8192, device=f"cuda:{i}", dtype=torch.float16) for i in range(torch.cuda.device_count())]
while time.time() < end:
    for x in xs:
        x @ x
    torch.cuda.synchronize()
PY
    ) >"$work/load.log" 2>&1 &
    load_pid=$!
else
    say "load: none (no torch with CUDA in python3, or not the real driver)"
fi

# One scrape a second: /metrics latency and size, RSS, CPU time (user+sys) of the agent.
python3 - "$addr" "$agent" "$SECONDS_RUN" "$work" <<'PY' | tee -a "$summary"
import http.client, os, sys, time
host, port = sys.argv[1].split(":")
pid, seconds, work = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tck = os.sysconf("SC_CLK_TCK")
def proc():
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) * 1000 / tck
rows, t0 = [], time.monotonic()
under_load = None
for i in range(seconds):
    time.sleep(max(0.0, t0 + i + 1 - time.monotonic()))
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        t = time.perf_counter()
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        ms = (time.perf_counter() - t) * 1e3
        conn.close()
    except Exception as e:  # noqa: BLE001 - a missed scrape is a data point
        body, ms = f"error: {e}".encode(), float("nan")
    rss, cpu = proc()
    rows.append((time.monotonic() - t0, ms, len(body), rss, cpu))
    if i == (2 * seconds) // 3 - 1:
        under_load = body
with open(f"{work}/run-samples.csv", "w") as f:
    f.write("t_s,metrics_ms,metrics_bytes,rss_kib,cpu_ms_total\n")
    for r in rows:
        f.write("%.3f,%.3f,%d,%d,%.0f\n" % r)
if under_load:
    open(f"{work}/metrics-under-load.txt", "wb").write(under_load)
lat = sorted(r[1] for r in rows if r[1] == r[1])
if lat:
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"/metrics once a second over {len(rows)} s (new connection each): p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {lat[-1]:.2f} ms, {rows[-1][2]} bytes")
rss = [r[3] for r in rows]
print(f"RSS over the run: min {min(rss)/1024:.1f} MiB, max {max(rss)/1024:.1f} MiB, last {rss[-1]/1024:.1f} MiB")
if len(rows) > 1:
    span = rows[-1][0] - rows[0][0]
    print(f"CPU over the run: {(rows[-1][4] - rows[0][4]) / span:.1f} ms/s ({(rows[-1][4] - rows[0][4]) / span / 10:.2f} % of one core), {rows[-1][4]:.0f} ms in all incl. start-up")
PY
[[ -n $load_pid ]] && wait "$load_pid" 2>/dev/null

get /metrics "$work/metrics.txt"
get /v1/snapshot "$work/snapshot.json"
get /v1/health "$work/health.json"
[[ -z $nvml_lib ]] && command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=index,memory.used,temperature.gpu,power.draw,clocks.sm,utilization.gpu \
        --format=csv >"$work/nvidia-smi-after.csv" 2>&1

say "series: $(grep -vc '^#' "$work/metrics.txt") in $(wc -c <"$work/metrics.txt") bytes"
grep -E '^gpulse_collector_(success|duration_seconds|stale)\{' "$work/metrics.txt" | tee -a "$summary"
grep -E '^gpulse_gpu_(power_watts|temperature_celsius|memory_used_bytes|utilization_ratio|clock_hertz)\{' "$work/metrics.txt" | head -n 24 | tee -a "$summary"
grep -E '^gpulse_(node|gpu)_health(_reason)?\{' "$work/metrics.txt" | grep -v ' 0$' | tee -a "$summary"
[[ -f $work/metrics-under-load.txt && -n $load_pid ]] &&
    grep -E '^gpulse_gpu_(utilization_ratio|power_watts|clock_hertz|throttle_active|sm_active_ratio|pipe_active_ratio|dram_active_ratio)\{' "$work/metrics-under-load.txt" | grep -v ' 0$' | head -n 60 | tee "$work/under-load-summary.txt"
say "dcgm families: $(grep -c '^# TYPE DCGM_' "$work/metrics.txt")"

# NVML GPM: profiling families without DCGM (Hopper and newer; from the second cycle on).
# Required on an H100/H200; NVLink throughput is not (a GPU without NVLink has none).
gpm_failed=0
model=$(grep -m1 -o '^gpulse_gpu_info{[^}]*' "$work/metrics.txt" | grep -o 'name="[^"]*"' | head -n1 | sed 's/^name="//; s/"$//')
grep -E '^(gpulse_gpu_(graphics_engine_active|sm_active|sm_occupancy|pipe_active|dram_active)_ratio|gpulse_gpu_(nvlink|pcie)_throughput_bytes_per_second|DCGM_FI_PROF_[A-Z0-9_]+)\{' "$work/metrics.txt" >"$work/gpm.txt"
[[ -f $work/metrics-under-load.txt ]] &&
    grep -E '^(gpulse_gpu_(sm_active|pipe_active)_ratio|DCGM_FI_PROF_PIPE_TENSOR_ACTIVE)\{' "$work/metrics-under-load.txt" >"$work/gpm-under-load.txt"
gpm_missing=()
for family in gpulse_gpu_graphics_engine_active_ratio gpulse_gpu_sm_active_ratio gpulse_gpu_sm_occupancy_ratio \
    gpulse_gpu_pipe_active_ratio gpulse_gpu_dram_active_ratio DCGM_FI_PROF_PIPE_TENSOR_ACTIVE DCGM_FI_PROF_SM_ACTIVE; do
    grep -q "^$family{" "$work/metrics.txt" || gpm_missing+=("$family")
done
case $model in
*H100* | *H200*)
    if [[ ${#gpm_missing[@]} -eq 0 ]]; then
        say "gpm: present on $model ($(wc -l <"$work/gpm.txt") series)"
    else
        say "gpm: FAILED: missing on $model: ${gpm_missing[*]}"
        gpm_failed=1
    fi
    ;;
*) say "gpm: ${model:-no GPU}: $(wc -l <"$work/gpm.txt") series (required only on H100/H200)" ;;
esac
grep -E '^gpulse_gpu_(sm_active_ratio|pipe_active_ratio\{[^}]*pipe="tensor")' "$work/gpm.txt" | head -n 16 | tee -a "$summary"
[[ -s $work/gpm-under-load.txt && -n $load_pid ]] &&
    say "gpm under load: max tensor pipe $(grep -E 'pipe="tensor"' "$work/gpm-under-load.txt" | awk '{ if ($2 > m) m = $2 } END { print m + 0 }'), max sm active $(grep -E '^gpulse_gpu_sm_active_ratio' "$work/gpm-under-load.txt" | awk '{ if ($2 > m) m = $2 } END { print m + 0 }')"

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
awk '/VmRSS|VmHWM|Threads/' "/proc/$agent/status" | tr -s ' \t' ' ' | tee -a "$summary"
kill "$agent" 2>/dev/null
wait "$agent" 2>/dev/null
trap - EXIT
grep -E '"level":"(WARN|ERROR)"' "$work/agent.log" | head -n 20 | tee -a "$summary"

section "NVML call timing (GPULSE_NVML_TIMING=1, one line per cycle)"
# Each cycle logs cycle_us (device count to last GPU) and calls_us (the timed NVML calls);
# the target is cycle <= 1.1x calls: gpulse's own work between calls is noise.
python3 - "$work/agent.log" <<'PY' | tee "$work/timing.txt" | tee -a "$summary"
import json, re, statistics, sys
cycles = []
for line in open(sys.argv[1], errors="replace"):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("target") != "gpulse::nvml_timing":
        continue
    f = m.get("fields", m)
    cycles.append((int(f["cycle_us"]), int(f["calls_us"]), str(f.get("groups", ""))))
if not cycles:
    print("nvml timing: no cycle logged (NVML not loaded?)")
    sys.exit(0)
steady = cycles[1:] or cycles  # the first cycle after start-up reads identities too
ratios = sorted(c / max(k, 1) for c, k, _ in steady)
med = lambda xs: statistics.median(xs)
print(f"nvml timing: {len(cycles)} cycles; cycle median {med([c for c, _, _ in steady])/1e3:.2f} ms, "
      f"calls median {med([k for _, k, _ in steady])/1e3:.2f} ms; "
      f"cycle / calls median {med(ratios):.3f}, max {ratios[-1]:.3f} (target <= 1.1: "
      f"{'met' if med(ratios) <= 1.1 else 'NOT met'})")
groups = {}
for _, _, g in steady:
    for name, us, n in re.findall(r"(\w+)=(\d+)us/(\d+)", g):
        groups.setdefault(name, []).append((int(us), int(n)))
rows = sorted(((med([u for u, _ in v]), name, med([n for _, n in v])) for name, v in groups.items()), reverse=True)
# N: how often the group ran in a cycle (once per GPU, or per ECC counter, PCIe reading, ...).
print("per call group, median over cycles (all GPUs): " + ", ".join(f"{name} {us/1e3:.2f} ms ({n:g}x)" for us, name, n in rows))
PY

section "kernel log"
# /dev/kmsg hands out whole records: a read smaller than one fails with EINVAL.
if dd if=/dev/kmsg of=/dev/null bs=8192 count=1 iflag=nonblock 2>/dev/null; then say "kmsg: readable"; else say "kmsg: not readable"; fi
(dmesg 2>/dev/null || true) | grep -i 'NVRM: Xid' | tail -n 20 >"$work/xids.txt"
say "xid lines in dmesg: $(wc -l <"$work/xids.txt")"

# At most 8 files come back from the device machine: the summary, the key captures, the rest
# in one archive.
cp "$work/summary.txt" "$work/timing.txt" "$work/tests.txt" "$work/scan.json" "$work/metrics.txt" "$OUT/"
tar -czf "$OUT/gpu-check.tar.gz" -C "$work" .
rm -rf "$work"
echo
echo "== summary ($OUT)"
cat "$OUT/summary.txt"
exit "$gpm_failed"
