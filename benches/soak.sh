#!/usr/bin/env bash
# Soak: the release agent on the fake NVML under steady load (OTLP push every second to a
# local OTLP/HTTP sink, one GET /metrics a second), watched for memory and descriptor growth.
#
# Usage: benches/soak.sh [SECONDS=60] [GPUS=8]
#
# Samples VmRSS and the open descriptor count every SOAK_SAMPLE_EVERY (5) seconds, prints the
# start (after SOAK_WARMUP, 10 s), end and peak, and the growth past warm-up (KiB and KiB/min,
# a least-squares slope over the samples). Exits 1 when the RSS grew by more than
# SOAK_MAX_RSS_GROWTH_KIB (2048) from the first sample after warm-up to the last, when the
# descriptor count grew by more than SOAK_MAX_FD_GROWTH (0), when no push or no scrape
# succeeded, or when the agent died.
#
# The sink is a python3 http.server that answers every POST (/v1/metrics, /v1/logs) with 200
# and an empty body. Environment: GPULSE_BIN=path runs that binary instead of building
# `cargo build --release` (CARGO_TARGET_DIR is honoured); CI passes the binary its cross step
# built. Needs: cc, python3, Linux /proc (cargo unless GPULSE_BIN).
set -euo pipefail

DURATION=${1:-60}
GPUS=${2:-8}
WARMUP=${SOAK_WARMUP:-10}
EVERY=${SOAK_SAMPLE_EVERY:-5}
MAX_RSS_KIB=${SOAK_MAX_RSS_GROWTH_KIB:-2048}
MAX_FDS=${SOAK_MAX_FD_GROWTH:-0}

for n in "$DURATION" "$GPUS" "$WARMUP" "$EVERY" "$MAX_RSS_KIB" "$MAX_FDS"; do
    if ! [[ $n =~ ^[0-9]+$ ]]; then
        echo "usage: $0 [SECONDS=60] [GPUS=8] (SOAK_* settings are whole numbers)" >&2
        exit 2
    fi
done
if ((GPUS < 1 || EVERY < 1 || DURATION < WARMUP + 2 * EVERY)); then
    echo "usage: $0 [SECONDS=60 (>= warm-up + 2 samples)] [GPUS=8 (>= 1)]" >&2
    exit 2
fi

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start soak
bench_binary
bench_fake_nvml
printf 'gpus=%s\nconfig_poll_ms=1000\n' "$GPUS" >"$work/fake_nvml.conf"

agent_port=$(free_port)
sink_port=$(free_port)

# The OTLP/HTTP sink: counts POSTs per path in $work/sink.count.
bench_otlp_sink "$sink_port" "$work/sink.count"

bench_scrub_env GPULSE_BIN
cat >"$work/gpulse.toml" <<EOF
[otlp]
endpoint = "http://127.0.0.1:$sink_port"
protocol = "http/protobuf"
interval = "1s"
EOF
"$bin" --config "$work/gpulse.toml" --nvml-lib "$work/libnvidia-ml.so.1" \
    --listen "127.0.0.1:$agent_port" 2>"$work/agent.log" &
agent=$!
pids+=("$agent")

status=0
python3 - "$agent" "$agent_port" "$DURATION" "$WARMUP" "$EVERY" "$MAX_RSS_KIB" "$MAX_FDS" \
    "$work/sink.count" "$GPUS" <<'PY' || status=$?
import http.client, json, os, sys, threading, time
pid, port, duration, warmup, every, max_rss, max_fds = (int(a) for a in sys.argv[1:8])
sink_file, gpus = sys.argv[8], sys.argv[9]

def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))

deadline = time.monotonic() + 10
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            c.close()
            break
    except OSError:
        pass
    if time.monotonic() > deadline or not alive():
        sys.exit("gpulse did not become ready")
    time.sleep(0.05)

start = time.monotonic()
scrapes = {"ok": 0, "failed": 0}
done = threading.Event()
def scrape():
    while not done.is_set():
        t = time.monotonic()
        try:  # a new connection each time, as Prometheus's scrapes after an idle timeout
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/metrics")
            r = c.getresponse()
            r.read()
            c.close()
            scrapes["ok" if r.status == 200 else "failed"] += 1
        except OSError:
            scrapes["failed"] += 1
        done.wait(max(0.0, 1.0 - (time.monotonic() - t)))
threading.Thread(target=scrape, daemon=True).start()

samples = []  # (seconds since start, rss KiB, fds)
while True:
    now = time.monotonic() - start
    if not alive():
        done.set()
        sys.exit(f"gpulse died after {now:.0f} s")
    samples.append((now, rss_kib(), fds()))
    if now >= duration:
        break
    time.sleep(min(every, max(0.0, duration - now)) or every)
done.set()

steady = [s for s in samples if s[0] >= warmup]
t0, rss0, fd0 = steady[0]
t1, rss1, fd1 = steady[-1]
peak = max(s[1] for s in samples)
n = len(steady)
mt = sum(s[0] for s in steady) / n
mr = sum(s[1] for s in steady) / n
den = sum((s[0] - mt) ** 2 for s in steady) or 1.0
slope = sum((s[0] - mt) * (s[1] - mr) for s in steady) / den * 60  # KiB/min
try:
    with open(sink_file) as f:
        pushes = json.load(f)["paths"]
except (OSError, ValueError, KeyError):
    pushes = {}
metrics_pushes = pushes.get("/v1/metrics", 0)

print(f"soak: {gpus} fake GPUs, {duration} s, OTLP push every 1 s, 1 scrape/s; samples every {every} s, growth from {warmup} s")
print("RSS over t   " + " ".join(f"{s[0]:.0f}s:{s[1] / 1024:.1f}" for s in samples) + " (MiB)")
print(f"RSS          start {rss0} KiB   end {rss1} KiB   peak {peak} KiB   growth {rss1 - rss0:+d} KiB over {t1 - t0:.0f} s "
      f"(slope {slope:+.1f} KiB/min = {slope * 60 / 1024:+.1f} MiB/h)")
print(f"fds          start {fd0}   end {fd1}   peak {max(s[2] for s in samples)}   growth {fd1 - fd0:+d}")
print(f"traffic      {scrapes['ok']} scrapes ok, {scrapes['failed']} failed; sink got {metrics_pushes} metric pushes, "
      f"{pushes.get('/v1/logs', 0)} log pushes")
failures = []
if rss1 - rss0 > max_rss:
    failures.append(f"RSS grew {rss1 - rss0} KiB > {max_rss} KiB (SOAK_MAX_RSS_GROWTH_KIB)")
if fd1 - fd0 > max_fds:
    failures.append(f"descriptors grew by {fd1 - fd0} > {max_fds} (SOAK_MAX_FD_GROWTH)")
if metrics_pushes == 0:
    failures.append("the sink got no OTLP metric push")
if scrapes["ok"] == 0:
    failures.append("no scrape succeeded")
for f in failures:
    print(f"FAIL: {f}")
sys.exit(1 if failures else 0)
PY

problems=$(grep -cE ' (WARN|ERROR) ' "$work/agent.log" || true)
echo "agent log: $(wc -l <"$work/agent.log") lines, $problems WARN/ERROR"
grep -E ' (WARN|ERROR) ' "$work/agent.log" | grep -v 'agent.state_dir is not set' | head -n 5 || true
exit "$status"
