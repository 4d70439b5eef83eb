#!/usr/bin/env bash
# Resource footprint of the release agent on the fake NVML (no GPU needed).
#
# Usage: benches/footprint.sh [SECONDS=60] [GPUS=8]
#
# Builds `cargo build --release`, compiles tests/fake_nvml/fake_nvml.c into a temp dir with
# `gpus=GPUS`, runs `gpulse --interval 1s` with GPULSE_HOST_INTERVAL=1s on it for SECONDS (GPU
# and host collectors both sample every second; the host's default is 5 s), then times 1000 sequential GET /metrics over one keep-alive
# connection. Reports RSS (sampled each second after a 5 s warm-up), VmHWM, CPU time, threads,
# /metrics latency, binary size and what the resident memory is made of (smaps). Idle CPU at
# the defaults, per thread: benches/idle.sh; memory and descriptors under load: benches/soak.sh.
# Needs: cargo, cc, python3, Linux /proc.
set -euo pipefail

DURATION=${1:-60}
GPUS=${2:-8}
WARMUP=5
REQUESTS=1000

if ! [[ $DURATION =~ ^[0-9]+$ && $GPUS =~ ^[0-9]+$ ]] || ((DURATION <= WARMUP + 1 || GPUS < 1)); then
    echo "usage: $0 [SECONDS=60 (> $((WARMUP + 1)))] [GPUS=8 (>= 1)]" >&2
    exit 2
fi

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start footprint
agent_pid=""

echo "== build"
cargo build --release --quiet
bin=target/release/gpulse
# A just-linked binary's page-cache pages are still dirty and would show up in smaps as
# Private_Dirty; write them back first so the mapping table below means what it says.
sync "$bin" 2>/dev/null || sync
bench_fake_nvml
# The fake re-reads its config at most once a second, so the figures are gpulse's, not a
# stat() per NVML call in the fake.
printf 'gpus=%s\nconfig_poll_ms=1000\n' "$GPUS" >"$work/fake_nvml.conf"

port=$(free_port)
addr="127.0.0.1:$port"

# Only the flags; inherited GPULSE_* config variables would change what is measured.
# shellcheck disable=SC2119 # nothing to keep
bench_scrub_env
GPULSE_HOST_INTERVAL=1s "$bin" --nvml-lib "$work/libnvidia-ml.so.1" --interval 1s --listen "$addr" \
    2>"$work/agent.log" &
agent_pid=$!
pids+=("$agent_pid")
t_start=$(date +%s.%N)

# Wait (max 10 s) until the first cycle is done.
if ! python3 - "$port" <<'PY'; then
import http.client, sys, time
port = int(sys.argv[1])
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit(1)
PY
    echo "gpulse did not become ready on $addr; its log:" >&2
    cat "$work/agent.log" >&2
    exit 1
fi
t_ready=$(date +%s.%N)

clk_tck=$(getconf CLK_TCK)
# CPU ticks (utime + stime) of the agent; fields after the ")" that ends comm.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$agent_pid/stat"; }
status_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$agent_pid/status"; }

sleep "$WARMUP"
ticks_warm=$(cpu_ticks)
t_warm=$(date +%s.%N)
rss_samples=()
for ((i = WARMUP; i < DURATION; i++)); do
    sleep 1
    rss_samples+=("$(status_kib VmRSS)")
done
ticks_steady=$(cpu_ticks)
threads=$(status_kib Threads)
t_steady=$(date +%s.%N)

echo
echo "== /metrics latency: $REQUESTS sequential GETs, one keep-alive connection (python3 http.client)"
python3 - "$port" "$REQUESTS" <<'PY'
import http.client, statistics, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
def get():
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"/metrics answered {r.status}")
    return body
for _ in range(20):  # warm the connection and the agent's buffers
    body = get()
ms = []
for _ in range(n):
    t = time.perf_counter()
    body = get()
    ms.append((time.perf_counter() - t) * 1000)
ms.sort()
def pct(p):
    return ms[min(len(ms) - 1, int(round(p / 100 * len(ms))) - 1)]
samples = sum(1 for l in body.splitlines() if l and not l.startswith(b"#"))
print(f"body       {len(body)} bytes, {samples} samples")
print(f"latency    p50 {pct(50):.3f} ms   p90 {pct(90):.3f} ms   p99 {pct(99):.3f} ms   "
      f"max {ms[-1]:.3f} ms   mean {statistics.fmean(ms):.3f} ms")
PY
ticks_end=$(cpu_ticks)
hwm=$(status_kib VmHWM)
rss_end=$(status_kib VmRSS)
t_end=$(date +%s.%N)

echo
echo "== footprint: $GPUS fake GPUs, --interval 1s, ${DURATION}s run (+ the latency burst)"
printf '%s\n' "${rss_samples[@]}" | sort -n | awk -v n="${#rss_samples[@]}" '
    { v[NR] = $1 }
    END {
        med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        printf "steady RSS   min %d KiB (%.2f MiB)   median %d KiB (%.2f MiB)   max %d KiB (%.2f MiB)   [%d samples, 1/s after %ss warm-up]\n",
            v[1], v[1] / 1024, med, med / 1024, v[n], v[n] / 1024, n, '"$WARMUP"'
    }'
# The store keeps window_samples (default 300) samples per source, so RSS grows until the
# window is full: 300 s at --interval 1s. Shorter runs measure the filling phase.
printf '%s\n' "${rss_samples[@]}" | awk '
    NR == 1 { first = $1 } { last = $1; n = NR }
    END { printf "RSS trend    %+d KiB from first to last sample (%+.1f KiB/s; the store window fills for 300 s at 1 s intervals)\n", last - first, (last - first) / (n > 1 ? n - 1 : 1) }'
printf '%s\n' "${rss_samples[@]}" | awk -v w="$WARMUP" '
    { v[NR] = $1; n = NR }
    END {
        step = int(n / 10); if (step < 1) step = 1
        line = "RSS over t   "
        for (i = 1; i <= n; i += step) line = line sprintf("%ds:%.1f ", w + i, v[i] / 1024)
        if ((i - step) != n) line = line sprintf("%ds:%.1f ", w + n, v[n] / 1024)
        print line "(MiB)"
    }'
printf 'RSS after    %d KiB (%.2f MiB) after the latency burst\n' "$rss_end" "$(awk -v k="$rss_end" 'BEGIN { print k / 1024 }')"
printf 'VmHWM        %d KiB (%.2f MiB)\n' "$hwm" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')"
echo "threads      $threads"
awk -v tw="$ticks_warm" -v ts="$ticks_steady" -v te="$ticks_end" -v hz="$clk_tck" \
    -v d="$DURATION" -v n="$REQUESTS" \
    -v t0="$t_start" -v tr="$t_ready" -v tw0="$t_warm" -v tsd="$t_steady" -v tend="$t_end" 'BEGIN {
    total = te / hz; steady = (ts - tw) / hz; burst = (te - ts) / hz
    printf "ready after  %.0f ms\n", (tr - t0) * 1000
    printf "CPU total    %.2f s over %.1f s wall (startup + %ss sampling + burst)\n", total, tend - t0, d
    printf "CPU/cycle    %.2f ms = CPU total * 1000 / %s s (one GPU + one host cycle per second; includes startup, readiness polls and the %d scrapes)\n", total * 1000 / d, d, n
    printf "CPU/cycle    %.2f ms steady state, no scrapes (%.2f s CPU over %.1f s after warm-up; GPU + host collectors) = %.3f%% of one core\n", steady * 1000 / (tsd - tw0), steady, tsd - tw0, steady * 100 / (tsd - tw0)
    printf "CPU/scrape   %.3f ms (%.2f s CPU over %d GET /metrics)\n", burst * 1000 / n, burst, n
    printf "(CPU resolution: 1/%d s per reading)\n", hz
}'

echo
echo "== binary"
size=$(stat -c %s "$bin")
printf '%s  %d bytes (%.2f MiB, stripped, lto=fat)\n' "$bin" "$size" "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')"

echo
echo "== /proc/PID/smaps_rollup"
grep -E '^(Rss|Pss|Pss_Anon|Pss_File|Shared_Clean|Shared_Dirty|Private_Clean|Private_Dirty|Anonymous|Swap):' "/proc/$agent_pid/smaps_rollup"

echo
echo "== RSS by mapping (/proc/PID/smaps, largest first)"
python3 - "/proc/$agent_pid/smaps" "$(readlink -f "$bin")" <<'PY'
import collections, re, sys
path, binary = sys.argv[1], sys.argv[2]
header = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")
maps = []
for line in open(path):
    m = header.match(line)
    if m:
        maps.append({"start": int(m[1], 16), "end": int(m[2], 16), "perms": m[3],
                     "name": m[4].strip(), "Rss": 0, "Pss": 0, "Private_Dirty": 0})
    else:
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Private_Dirty") and maps:
            maps[-1][key] = int(rest.split()[0])
def group(i):
    m = maps[i]
    name = m["name"]
    if name == binary or name.endswith("/gpulse"):
        return "gpulse binary"
    if name == "[heap]":
        return "[heap] (main malloc arena)"
    if name == "[stack]":
        return "[stack] (main thread)"
    if name.startswith("["):
        return name
    if name:
        base = name.rsplit("/", 1)[-1]
        if base.startswith("libc.so") or base.startswith("libc-"):
            return "libc"
        if base.startswith("ld-linux"):
            return "ld.so"
        if base.startswith("libnvidia-ml"):
            return "libnvidia-ml (fake)"
        return "other file: " + base
    # Anonymous rw-. glibc puts each per-thread malloc arena at a 64 MiB-aligned address (its
    # PROT_NONE reserve follows); a thread stack has its PROT_NONE guard page right below it.
    if m["perms"].startswith("---"):
        return "anon PROT_NONE (guards, arena reserve)"
    if m["start"] % (64 << 20) == 0:
        return "anon: malloc thread arenas"
    prev = maps[i - 1] if i > 0 else None
    if prev and not prev["name"] and prev["perms"].startswith("---") and prev["end"] == m["start"]:
        return "anon: thread stacks"
    return "anon: other (mmap'd allocations, runtime)"
totals = collections.defaultdict(lambda: [0, 0, 0, 0])
for i, m in enumerate(maps):
    t = totals[group(i)]
    t[0] += m["Rss"]; t[1] += m["Pss"]; t[2] += m["Private_Dirty"]; t[3] += 1
rss_total = sum(t[0] for t in totals.values()) or 1
print(f"{'group':48} {'Rss KiB':>9} {'share':>6} {'Pss KiB':>9} {'PrivDirty':>9} {'maps':>5}")
for name, (rss, pss, dirty, n) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
    if rss == 0 and pss == 0:
        continue
    print(f"{name:48} {rss:9d} {rss * 100 / rss_total:5.1f}% {pss:9d} {dirty:9d} {n:5d}")
print(f"{'total':48} {rss_total:9d}")
PY

problems=$(grep -cE ' (WARN|ERROR) ' "$work/agent.log" || true)
echo
echo "== agent log: $(wc -l <"$work/agent.log") lines, $problems WARN/ERROR"
if ((problems > 0)); then
    grep -E ' (WARN|ERROR) ' "$work/agent.log" | head -n 10
fi
