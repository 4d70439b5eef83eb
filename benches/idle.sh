#!/usr/bin/env bash
# Idle CPU of the release agent on the fake NVML: no scrapes, no pushes, nothing to do but
# sample. What it costs a node to run gpulse when nobody looks.
#
# Usage: benches/idle.sh [SECONDS=60] [GPUS=8] [RUNS=1]
#
# Runs `gpulse` with its defaults (GPU every 1 s, host every 5 s, the kernel log followed
# from /dev/kmsg when readable) on tests/fake_nvml built with `gpus=GPUS`, whose NVML event
# wait blocks until its timeout as a real driver does (event_step_ms), waits WARMUP (10 s),
# then measures CPU over SECONDS: the whole process (utime + stime, clock ticks) and each
# thread (/proc/PID/task/*/schedstat, nanoseconds; threads grouped by name). Prints CPU in
# ms per second of wall time. RUNS > 1 starts a fresh agent per run and prints the median.
#
# Environment: GPULSE_BIN=path measures that binary instead of building `cargo build
# --release` (CARGO_TARGET_DIR is honoured); GPULSE_ARGS="..." adds flags (e.g.
# "--interval 1s" to sample the host every second too); IDLE_WARMUP=s changes the warm-up.
# Needs: cargo (unless GPULSE_BIN), cc, python3, Linux /proc.
set -euo pipefail

DURATION=${1:-60}
GPUS=${2:-8}
RUNS=${3:-1}
WARMUP=${IDLE_WARMUP:-10}

if ! [[ $DURATION =~ ^[0-9]+$ && $GPUS =~ ^[0-9]+$ && $RUNS =~ ^[0-9]+$ && $WARMUP =~ ^[0-9]+$ ]] ||
    ((DURATION < 5 || GPUS < 1 || RUNS < 1)); then
    echo "usage: $0 [SECONDS=60 (>= 5)] [GPUS=8 (>= 1)] [RUNS=1 (>= 1)]" >&2
    exit 2
fi

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start idle
agent_pid=""
stop_agent() {
    if [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null; then
        kill "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    agent_pid=""
}
cleanup() {
    stop_agent
    bench_cleanup
}
trap cleanup EXIT

bench_binary
bench_fake_nvml
# config_poll_ms: no stat() per NVML call; event_step_ms: the event wait sleeps until its
# timeout instead of waking every 50 ms (gpulse waits 1 s per call).
printf 'gpus=%s\nconfig_poll_ms=1000\nevent_step_ms=60000\n' "$GPUS" >"$work/fake_nvml.conf"

# Only the flags; inherited GPULSE_* (and OTEL_*) config variables would change what is measured.
bench_scrub_env GPULSE_BIN GPULSE_ARGS
read -r -a extra <<<"${GPULSE_ARGS:-}"

results=()
for ((run = 1; run <= RUNS; run++)); do
    port=$(free_port)
    "$bin" --nvml-lib "$work/libnvidia-ml.so.1" --listen "127.0.0.1:$port" "${extra[@]}" \
        2>"$work/agent.log" &
    agent_pid=$!
    line=$(python3 - "$agent_pid" "$port" "$WARMUP" "$DURATION" <<'PY'
import collections, http.client, os, sys, time
pid, port, warmup, duration = (int(a) for a in sys.argv[1:])
deadline = time.monotonic() + 10
while True:  # one /readyz poll loop, then nothing touches the agent
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            c.close()
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("gpulse did not become ready")
    time.sleep(0.05)
hz = os.sysconf("SC_CLK_TCK")

def process_ticks():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])

def threads():
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except OSError:
            continue
        out[tid] = (name, ns)
    return out

time.sleep(warmup)
t0, p0, s0 = time.monotonic(), process_ticks(), threads()
time.sleep(duration)
t1, p1, s1 = time.monotonic(), process_ticks(), threads()
wall = t1 - t0
by_name = collections.Counter()
for tid, (name, ns) in s1.items():
    by_name[name] += ns - s0.get(tid, (name, 0))[1]
total_ns = sum(by_name.values())
parts = " ".join(f"{name}={ns / 1e6 / wall:.3f}" for name, ns in by_name.most_common() if ns > 0)
print(f"{(p1 - p0) * 1000 / hz / wall:.3f} {total_ns / 1e6 / wall:.3f} {len(s1)} {parts}")
PY
)
    stop_agent
    read -r ticks_ms threads_ms nthreads parts <<<"$line"
    printf 'run %d: %s ms/s (threads, schedstat ns; %s threads)   %s ms/s (process utime+stime, 1/%s s ticks)\n' \
        "$run" "$threads_ms" "$nthreads" "$ticks_ms" "$(getconf CLK_TCK)"
    printf '  per thread, ms/s: %s\n' "$parts"
    results+=("$threads_ms")
done

median=$(printf '%s\n' "${results[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
echo "idle CPU: median $median ms/s over $RUNS run(s) of ${DURATION}s after ${WARMUP}s warm-up ($GPUS fake GPUs, $bin ${GPULSE_ARGS:-})"
problems=$(grep -cE ' (WARN|ERROR) ' "$work/agent.log" || true)
if ((problems > 0)); then
    echo "agent log (last run): $problems WARN/ERROR lines:"
    grep -E ' (WARN|ERROR) ' "$work/agent.log" | head -n 5
fi
