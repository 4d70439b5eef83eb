#!/usr/bin/env bash
# Side-by-side comparison of gpulse with peer exporters on one fake NVML, and gpulse's scaling
# with GPUs, probes and OTLP. Not part of CI (a peer takes a long build); figures go to
# benches/README.md.
#
# Usage: benches/compare.sh            (COMPARE_* settings below; about 10 minutes at defaults)
#
# Sections (COMPARE_SECTIONS, default "peers,scaling"):
#   peers    gpulse, all-smi (`all-smi api`) and nvitop-exporter, one after the other, each on
#            tests/fake_nvml with COMPARE_PEER_GPUS ("2 8") GPUs at a 1 s interval. One table per
#            GPU count, peers' cells with their ratio to gpulse.
#   scaling  gpulse alone: COMPARE_SCALE_GPUS ("1 8 64") x COMPARE_SCALE_PROBES ("0 1 16") probes
#            of a local OpenAI-compatible stand-in (python3), OTLP off; then OTLP on (OTLP/HTTP
#            push every 1 s to a python3 sink that answers 200) at each GPU count, 0 probes.
#            tests/fake_nvml holds up to 64 GPUs.
# Each exporter runs with its defaults, which for gpulse are GPU every 1 s and host every 5 s
# (before 1d7ec34: host every 1 s), and with `--interval 1` for the peers (all-smi: GPU and host;
# nvitop-exporter: everything), on its own port. Each is measured so:
#   start-up   exec to the first GET /metrics that answers 200 with a GPU series (polled every 5 ms);
#   idle       COMPARE_WARMUP (5) s after that, CPU over COMPARE_DURATION (10) s, nothing asking;
#   scraped    CPU over COMPARE_DURATION s with one GET /metrics a second on a keep-alive
#              connection with `Accept-Encoding: gzip`, as a Prometheus with scrape_interval 1s;
#   latency    COMPARE_REQUESTS (300) sequential GETs on one keep-alive connection: p50/p99,
#              uncompressed (and, in the scaling table, with gzip);
#   throughput COMPARE_CONCURRENCY (4) client processes, each a keep-alive connection, GETs for
#              COMPARE_LOAD_SECONDS (3) s: answers/s. The python client shares the 2 cores with
#              the exporter, so a fast exporter's figure is partly the client's limit;
#   RSS        VmRSS at the end of the idle and the scraped window; peak RSS is VmHWM at the end;
#   CPU        ms of CPU per second of wall time: the sum over the process's threads of
#              /proc/PID/task/TID/schedstat (ns), plus reaped children (cutime+cstime), or
#              utime+stime when threads that exited during the window make that larger;
#   size       the binary; for nvitop-exporter, the installed files of it and its Python
#              dependencies (importlib.metadata), not counting the interpreter.
#
# Environment:
#   GPULSE_BIN=path        the gpulse measured (default: `cargo build --release`, CARGO_TARGET_DIR honoured)
#   COMPARE_LABEL=name     names gpulse in the tables (default: `gpulse --version`)
#   COMPARE_PEERS="all-smi nvitop-exporter"   peers to run; one not installed is reported skipped
#   ALL_SMI_BIN, NVITOP_EXPORTER_BIN   the peers' executables (default: found on PATH)
#   COMPARE_DURATION, COMPARE_WARMUP, COMPARE_REQUESTS, COMPARE_CONCURRENCY, COMPARE_LOAD_SECONDS,
#   COMPARE_PEER_GPUS, COMPARE_SCALE_GPUS, COMPARE_SCALE_PROBES, COMPARE_SECTIONS (see above)
#   COMPARE_PROBE=busy|default   busy (the default): each probe checked every 1 s, its server's
#                          /metrics and a 1-token completion every 5 s; default: gpulse's probe
#                          defaults (checked every 10 s, no metrics, no synthetic request)
#   COMPARE_OUT=dir        keep the raw results (results.jsonl) and every exporter's log there
# Installing the peers (see benches/README.md): `cargo install all-smi@0.22.0 --locked` (needs
# Debian protobuf-compiler, libprotobuf-dev, libdrm-dev) and `pip install nvitop-exporter==1.7.2`.
# all-smi reads NVML only when `nvidia-smi -L` lists GPUs: the script puts a stand-in on its PATH.
# Needs: cc, python3, Linux /proc (cargo unless GPULSE_BIN).
set -euo pipefail

DURATION=${COMPARE_DURATION:-10}
WARMUP=${COMPARE_WARMUP:-5}
REQUESTS=${COMPARE_REQUESTS:-300}
CONCURRENCY=${COMPARE_CONCURRENCY:-4}
LOAD_SECONDS=${COMPARE_LOAD_SECONDS:-3}
SECTIONS=${COMPARE_SECTIONS:-peers,scaling}
PEERS=${COMPARE_PEERS:-all-smi nvitop-exporter}
PEER_GPUS=${COMPARE_PEER_GPUS:-2 8}
SCALE_GPUS=${COMPARE_SCALE_GPUS:-1 8 64}
SCALE_PROBES=${COMPARE_SCALE_PROBES:-0 1 16}
PROBE=${COMPARE_PROBE:-busy}

usage() {
    echo "usage: $0 (settings in COMPARE_* variables, see the head of the script): $1" >&2
    exit 2
}
for n in "$DURATION" "$WARMUP" "$REQUESTS" "$CONCURRENCY" "$LOAD_SECONDS" $PEER_GPUS $SCALE_GPUS $SCALE_PROBES; do
    [[ $n =~ ^[0-9]+$ ]] || usage "'$n' is not a whole number"
done
((DURATION >= 1 && REQUESTS >= 10 && CONCURRENCY >= 1 && LOAD_SECONDS >= 1)) ||
    usage "COMPARE_DURATION, COMPARE_CONCURRENCY, COMPARE_LOAD_SECONDS >= 1, COMPARE_REQUESTS >= 10"
[[ $PROBE == busy || $PROBE == default ]] || usage "COMPARE_PROBE is busy or default"
for s in ${SECTIONS//,/ }; do
    [[ $s == peers || $s == scaling ]] || usage "unknown section '$s' in COMPARE_SECTIONS (peers, scaling)"
done
for p in ${PEERS//,/ }; do
    [[ $p == all-smi || $p == nvitop-exporter ]] || usage "unknown peer '$p' in COMPARE_PEERS (all-smi, nvitop-exporter)"
done

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start compare
out=${COMPARE_OUT:-$work}
mkdir -p "$out"
: >"$out/results.jsonl"

bench_binary
bin=$(readlink -f "$bin")
label=${COMPARE_LABEL:-$("$bin" --version 2>/dev/null || echo gpulse)}
bench_fake_nvml
# One fake config per GPU count (FAKE_NVML_CONFIG picks it): config_poll_ms, no stat() per NVML
# call; event_step_ms, the event wait blocks until its timeout as a driver's does.
fake_conf() {
    local f="$work/fake-$1.conf"
    [[ -f $f ]] || printf 'gpus=%s\nconfig_poll_ms=1000\nevent_step_ms=60000\n' "$1" >"$f"
    echo "$f"
}

# all-smi uses NVML when `nvidia-smi -L` lists GPUs: list the fake's (same names and UUIDs).
mkdir -p "$work/path"
cat >"$work/path/nvidia-smi" <<'EOF'
#!/bin/sh
echo "$*" >>"${COMPARE_NVIDIA_SMI_LOG:-/dev/null}"
n=$(sed -n 's/^gpus=//p' "$FAKE_NVML_CONFIG")
i=0
while [ "$i" -lt "$n" ]; do
    printf 'GPU %d: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-fake-4000-8000-%012d)\n' "$i" "$i"
    i=$((i + 1))
done
EOF
chmod +x "$work/path/nvidia-smi"

bench_scrub_env GPULSE_BIN

# The measurement of one exporter: `measure.py RESULT_JSON_FIELDS PORT MARKER -- CMD...`.
cat >"$work/measure.py" <<'PY'
import http.client, json, multiprocessing, os, re, signal, socket, subprocess, sys, time
fields = json.loads(sys.argv[1])
port, marker = int(sys.argv[2]), sys.argv[3].encode()
cmd = sys.argv[5:]
cfg = {k: int(os.environ[f"COMPARE_{k.upper()}"]) for k in
       ("duration", "warmup", "requests", "concurrency", "load_seconds")}
hz = os.sysconf("SC_CLK_TCK")
counters = [p for p in os.environ.get("COMPARE_COUNTERS", "").split(":") if p]

def counts():
    """(requests, bytes) the stand-in server or the OTLP sink counted so far"""
    n = b = 0
    for path in counters:
        try:
            with open(path) as f:
                c = json.load(f)
            n, b = n + c.get("count", 0), b + c.get("bytes", 0)
        except (OSError, ValueError):
            pass
    return n, b

def get(conn, gz=False):
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"} if gz else {})
    r = conn.getresponse()
    return r.status, r.getheader("Content-Encoding"), r.read()

log = open(os.environ["COMPARE_LOG"], "w")
t0 = time.perf_counter()
proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
pid = proc.pid
result = dict(fields, cmd=" ".join(cmd))

def stat_fields():
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()

def cpu():
    """({tid: ns run, from schedstat}, ns of utime+stime, ns of reaped children)"""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                threads[tid] = int(f.read().split()[0])
        except OSError:
            pass
    s = stat_fields()
    tick = 1e9 / hz
    return threads, (int(s[11]) + int(s[12])) * tick, (int(s[13]) + int(s[14])) * tick

def cpu_ms_per_s(a, b, wall):
    # Per thread, so a thread that ends in the window takes none of its earlier time with it
    # (threads started in the window count from 0).
    sched = sum(ns - a[0].get(tid, 0) for tid, ns in b[0].items())
    ticks = b[1] - a[1]
    if ticks - sched > 2e9 / hz:  # threads ended in the window: their time is only in the ticks
        sched = ticks
    return (sched + b[2] - a[2]) / 1e6 / wall

def status_kib(key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

def finish(error=None):
    if error:
        result["error"] = error
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(json.dumps(result), flush=True)
    sys.exit(0)

def interrupted(signum, frame):
    finish(f"interrupted by signal {signum}")
signal.signal(signal.SIGTERM, interrupted)
signal.signal(signal.SIGINT, interrupted)

def hammer(deadline):
    """GETs on one keep-alive connection until deadline: the count of 200s. A raw socket and
    Content-Length framing (every exporter here sends one), so the client costs less than
    http.client; None when an answer has no Content-Length."""
    req = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    buf = bytearray(1 << 20)
    sock, ok = None, 0
    while time.perf_counter() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(req)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if not length:
                return None
            left = int(length[1]) - len(rest)
            while left > 0:
                n = sock.recv_into(buf, min(left, len(buf)))
                if n == 0:
                    raise ConnectionError("closed")
                left -= n
            if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"):
                ok += 1
            if head.startswith(b"HTTP/1.0") or re.search(rb"(?i)\r\nconnection: *close", head):
                sock.close()
                sock = None
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return ok

try:
    deadline = t0 + 60
    while True:  # start-up: exec to the first /metrics with a GPU series
        if proc.poll() is not None:
            finish(f"exited with {proc.returncode} before serving /metrics")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            status, _, body = get(c)
            c.close()
            if status == 200 and marker in body:
                result["startup_ms"] = (time.perf_counter() - t0) * 1000
                break
        except (OSError, http.client.HTTPException):
            pass
        if time.perf_counter() > deadline:
            finish(f"no GPU series ({marker.decode()}) in /metrics within 60 s")
        time.sleep(0.005)

    time.sleep(cfg["warmup"])
    w0, c0 = time.perf_counter(), cpu()
    time.sleep(cfg["duration"])
    w1, c1 = time.perf_counter(), cpu()
    result["cpu_idle"] = cpu_ms_per_s(c0, c1, w1 - w0)
    result["rss_idle_kib"] = status_kib("VmRSS")
    result["threads"] = status_kib("Threads")

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    get(conn, gz=True)
    n0, w0, c0 = counts(), time.perf_counter(), cpu()
    for i in range(cfg["duration"]):
        get(conn, gz=True)
        time.sleep(max(0.0, w0 + i + 1 - time.perf_counter()))
    w1, c1, n1 = time.perf_counter(), cpu(), counts()
    result["cpu_scraped"] = cpu_ms_per_s(c0, c1, w1 - w0)
    result["rss_scraped_kib"] = status_kib("VmRSS")
    result["counted_per_s"] = (n1[0] - n0[0]) / (w1 - w0)
    result["counted_bytes_each"] = (n1[1] - n0[1]) / max(1, n1[0] - n0[0])

    for gz in (False, True):
        ms = []
        for _ in range(cfg["requests"]):
            t = time.perf_counter()
            status, enc, body = get(conn, gz)
            ms.append((time.perf_counter() - t) * 1000)
            if status != 200:
                finish(f"/metrics answered {status}")
        ms.sort()
        pct = lambda p: ms[min(len(ms) - 1, int(round(p / 100 * len(ms))) - 1)]
        key = "gz" if gz else "plain"
        result[f"p50_{key}_ms"], result[f"p99_{key}_ms"] = pct(50), pct(99)
        if gz:
            result["gzip"] = enc == "gzip"
            result["body_gz_bytes"] = len(body)
        else:
            result["body_bytes"] = len(body)
            result["series"] = sum(1 for l in body.splitlines() if l and not l.startswith(b"#"))
    conn.close()

    end = time.perf_counter() + cfg["load_seconds"]
    start = time.perf_counter()
    default_signals = lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGTERM, signal.SIGINT)]
    with multiprocessing.Pool(cfg["concurrency"], initializer=default_signals) as pool:
        oks = pool.map(hammer, [end] * cfg["concurrency"])
    if None not in oks:
        result["rps"] = sum(oks) / (time.perf_counter() - start)
    result["peak_rss_kib"] = status_kib("VmHWM")
    result["rss_end_kib"] = status_kib("VmRSS")
    finish()
except (OSError, http.client.HTTPException) as e:
    finish(f"{type(e).__name__}: {e}")
PY

# run NAME GPUS PORT MARKER [FIELD=VALUE...] -- CMD...: measures one exporter, appends a line.
run() {
    local name=$1 gpus=$2 port=$3 marker=$4
    shift 4
    local fields="\"exporter\": \"$name\", \"gpus\": $gpus" logf="$out/$name-$gpus"
    while [[ $1 != -- ]]; do
        fields+=", \"${1%%=*}\": ${1#*=}"
        [[ $1 == bin_bytes=* ]] || logf+="-${1%%=*}${1#*=}"
        shift
    done
    shift
    logf+=.log
    echo "  $name, $gpus GPUs: ${logf##*/}" >&2
    COMPARE_DURATION=$DURATION COMPARE_WARMUP=$WARMUP COMPARE_REQUESTS=$REQUESTS \
        COMPARE_CONCURRENCY=$CONCURRENCY COMPARE_LOAD_SECONDS=$LOAD_SECONDS COMPARE_LOG=$logf \
        FAKE_NVML_CONFIG=$(fake_conf "$gpus") \
        python3 "$work/measure.py" "{$fields}" "$port" "$marker" -- "$@" >>"$out/results.jsonl"
    if tail -n 1 "$out/results.jsonl" | grep -q '"error"'; then
        echo "    failed: $(tail -n 1 "$out/results.jsonl" | sed 's/.*"error": "\([^"]*\)".*/\1/'); its log:" >&2
        tail -n 5 "$logf" | sed 's/^/    /' >&2
    fi
}

size_of() { stat -L -c %s "$1"; }
# Installed size of a Python distribution and what it requires, with the interpreter of $1.
py_dist_size() {
    local python
    python=$(head -n 1 "$1" | sed -n 's/^#! *//p')
    [[ -x $python ]] || { echo null; return; }
    "$python" - "$2" <<'PY'
import importlib.metadata as md, os, re, sys
seen, todo, total = set(), [sys.argv[1]], 0
while todo:
    name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
    if name in seen:
        continue
    seen.add(name)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    for f in dist.files or []:
        try:
            total += os.path.getsize(f.locate())
        except OSError:
            pass
    todo += [r for r in dist.requires or [] if "extra ==" not in r]
print(total)
PY
}

gpulse_version=$("$bin" --version 2>/dev/null || echo "?")
printf '{"meta": true, "label": "%s", "bin": "%s", "version": "%s", "duration": %s, "warmup": %s, "requests": %s, "concurrency": %s, "load_seconds": %s, "probe": "%s", "bin_bytes": %s}\n' \
    "$label" "$bin" "$gpulse_version" "$DURATION" "$WARMUP" "$REQUESTS" "$CONCURRENCY" "$LOAD_SECONDS" "$PROBE" \
    "$(size_of "$bin")" >>"$out/results.jsonl"

gpulse_marker=gpulse_gpu_utilization_ratio

if [[ ,$SECTIONS, == *,peers,* ]]; then
    echo "== peers: gpulse ($label) and ${PEERS//,/ } on ${PEER_GPUS// /, } fake GPUs" >&2
    all_smi=${ALL_SMI_BIN:-$(command -v all-smi || true)}
    nvitop=${NVITOP_EXPORTER_BIN:-$(command -v nvitop-exporter || true)}
    for gpus in $PEER_GPUS; do
        port=$(free_port)
        run gpulse "$gpus" "$port" "$gpulse_marker" "bin_bytes=$(size_of "$bin")" -- \
            "$bin" --nvml-lib "$work/libnvidia-ml.so.1" --listen "127.0.0.1:$port"
        for peer in ${PEERS//,/ }; do
            port=$(free_port)
            case $peer in
            all-smi)
                if [[ -z $all_smi || ! -x $all_smi ]]; then
                    echo "{\"exporter\": \"all-smi\", \"gpus\": $gpus, \"skipped\": \"not installed (ALL_SMI_BIN, or all-smi on PATH)\"}" >>"$out/results.jsonl"
                    continue
                fi
                # api mode: --interval in seconds. The stand-in nvidia-smi comes first on PATH.
                mkdir -p "$work/home"
                HOME="$work/home" PATH="$work/path:$PATH" LD_LIBRARY_PATH="$work${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
                    COMPARE_NVIDIA_SMI_LOG="$out/nvidia-smi-calls.txt" \
                    run all-smi "$gpus" "$port" all_smi_gpu_utilization "bin_bytes=$(size_of "$all_smi")" -- \
                    "$all_smi" api --port "$port" --interval 1
                ;;
            nvitop-exporter)
                if [[ -z $nvitop || ! -x $nvitop ]]; then
                    echo "{\"exporter\": \"nvitop-exporter\", \"gpus\": $gpus, \"skipped\": \"not installed (NVITOP_EXPORTER_BIN, or nvitop-exporter on PATH)\"}" >>"$out/results.jsonl"
                    continue
                fi
                size=$(py_dist_size "$nvitop" nvitop-exporter)
                LD_LIBRARY_PATH="$work${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
                    run nvitop-exporter "$gpus" "$port" gpu_utilization_Percentage "bin_bytes=$size" -- \
                    "$nvitop" --bind-address 127.0.0.1 --port "$port" --interval 1
                ;;
            esac
        done
    done
fi

if [[ ,$SECTIONS, == *,scaling,* ]]; then
    echo "== scaling: gpulse ($label), ${SCALE_GPUS// /, } GPUs x ${SCALE_PROBES// /, } probes, OTLP off/on" >&2
    # The probes' target: an OpenAI-compatible (vLLM-flavoured) stand-in; counts its requests.
    stand_port=$(free_port)
    python3 - "$stand_port" "$work/stand-in.count" <<'PY' &
import http.server, json, sys, threading, time
port, out = int(sys.argv[1]), sys.argv[2]
count = {"count": 0}
lock = threading.Lock()
METRICS = b"""# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="stand-in"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="stand-in"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="stand-in"} 0.25
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="stand-in"} 1234.0
"""
def dump():
    while True:
        time.sleep(0.5)
        with lock, open(out, "w") as f:
            json.dump(count, f)
threading.Thread(target=dump, daemon=True).start()
class StandIn(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body, ctype="application/json"):
        with lock:
            count["count"] += 1
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/v1/models"):
            self.answer(b'{"object":"list","data":[{"id":"stand-in","object":"model"}]}')
        elif self.path.startswith("/metrics"):
            self.answer(METRICS, "text/plain; version=0.0.4")
        else:  # /health and the rest
            self.answer(b"{}")
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chat = "chat" in self.path
        delta = '{"delta":{"content":"x"},"index":0}' if chat else '{"text":"x","index":0}'
        self.answer((f'data: {{"choices":[{delta}]}}\n\n'
                     'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
                     'data: [DONE]\n\n').encode(), "text/event-stream")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), StandIn).serve_forever()
PY
    pids+=($!)
    # The OTLP/HTTP sink: 200 and an empty body to every POST, counted.
    sink_port=$(free_port)
    bench_otlp_sink "$sink_port" "$work/sink.count"
    wait_port "$stand_port"

    # gpulse_config PROBES OTLP(0/1): the config file of one scaling run.
    gpulse_config() {
        local f="$work/gpulse-$1-$2.toml" i
        : >"$f"
        if (($2)); then
            printf '[otlp]\nendpoint = "http://127.0.0.1:%s"\nprotocol = "http/protobuf"\ninterval = "1s"\n\n' \
                "$sink_port" >>"$f"
        fi
        # busy: readiness + model list every 1 s, the server's /metrics and a 1-token streaming
        # completion every 5 s. default: gpulse's defaults (readiness + models every 10 s).
        for ((i = 1; i <= $1; i++)); do
            printf '[[probe]]\nname = "p%d"\nkind = "vllm"\nurl = "http://127.0.0.1:%s"\n' "$i" "$stand_port" >>"$f"
            if [[ $PROBE == busy ]]; then
                printf 'interval = "1s"\nmetrics = true\nmetrics_interval = "5s"\ninference = true\ninference_interval = "5s"\n' >>"$f"
            fi
            echo >>"$f"
        done
        echo "$f"
    }
    scale() {
        local gpus=$1 probes=$2 otlp=$3 port counters=""
        port=$(free_port)
        ((probes)) && counters="$work/stand-in.count"
        ((otlp)) && counters="$work/sink.count"
        COMPARE_COUNTERS=$counters run gpulse "$gpus" "$port" "$gpulse_marker" "probes=$probes" "otlp=$otlp" -- \
            "$bin" --config "$(gpulse_config "$probes" "$otlp")" --nvml-lib "$work/libnvidia-ml.so.1" \
            --listen "127.0.0.1:$port"
    }
    for gpus in $SCALE_GPUS; do
        for probes in $SCALE_PROBES; do
            scale "$gpus" "$probes" 0
        done
    done
    for gpus in $SCALE_GPUS; do
        scale "$gpus" 0 1
    done
fi

# The tables (markdown), from results.jsonl.
python3 - "$out/results.jsonl" "$(nproc)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = next(r for r in rows if r.get("meta"))
rows = [r for r in rows if not r.get("meta")]
print(f"\n## {meta['label']}\n")
print(f"gpulse: {meta['bin']} ({meta['version']}); {sys.argv[2]} CPUs; windows {meta['duration']} s after "
      f"{meta['warmup']} s warm-up; latency {meta['requests']} GETs; load {meta['concurrency']} x "
      f"keep-alive for {meta['load_seconds']} s. CPU in ms per s; RSS in MiB.")

def mib(kib):
    return None if kib is None else kib / 1024
COLS = [  # key, header, value, format, lower is better
    ("series", "series", lambda r: r.get("series"), "{:.0f}", None),
    ("body", "body KiB", lambda r: r.get("body_bytes", 0) / 1024 if "body_bytes" in r else None, "{:.0f}", None),
    ("rss", "RSS idle", lambda r: mib(r.get("rss_idle_kib")), "{:.1f}", True),
    ("rss_s", "RSS scraped", lambda r: mib(r.get("rss_scraped_kib")), "{:.1f}", True),
    ("peak", "peak RSS", lambda r: mib(r.get("peak_rss_kib")), "{:.1f}", True),
    ("cpu_i", "CPU idle", lambda r: r.get("cpu_idle"), "{:.2f}", True),
    ("cpu_s", "CPU scraped 1/s", lambda r: r.get("cpu_scraped"), "{:.2f}", True),
    ("p50", "p50 ms", lambda r: r.get("p50_plain_ms"), "{:.2f}", True),
    ("p99", "p99 ms", lambda r: r.get("p99_plain_ms"), "{:.2f}", True),
    ("rps", "req/s", lambda r: r.get("rps"), "{:,.0f}", False),
    ("start", "start-up ms", lambda r: r.get("startup_ms"), "{:.0f}", True),
    ("size", "binary MiB", lambda r: mib(r["bin_bytes"] / 1024) if r.get("bin_bytes") else None, "{:.1f}", True),
]
def cell(col, r, base=None):
    _, _, get, fmt, _ = col
    v = get(r)
    if v is None:
        return "n/a"
    s = fmt.format(v)
    if base is not None:
        b = get(base)
        if b:
            s += f" ({v / b:.2f}x)"
    return s

peers = [r for r in rows if "probes" not in r]
for gpus in dict.fromkeys(r["gpus"] for r in peers):
    group = [r for r in peers if r["gpus"] == gpus]
    base = next((r for r in group if r["exporter"] == "gpulse" and "error" not in r), None)
    print(f"\n### Peers, {gpus} GPUs (ratio: peer / gpulse)\n")
    print("| exporter | " + " | ".join(c[1] for c in COLS) + " |")
    print("|---" * (len(COLS) + 1) + "|")
    for r in group:
        name = r["exporter"] if r["exporter"] != "gpulse" else f"gpulse ({meta['label']})"
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or "failed: " + r["error"]
            print(f"| {name} | " + " | ".join(["-"] * (len(COLS) - 1)) + f" | {why} |")
            continue
        b = base if r is not base else None
        print(f"| {name} | " + " | ".join(cell(c, r, b) for c in COLS) + " |")

scaling = [r for r in rows if "probes" in r]
if scaling:
    probe = ("check every 1 s, server /metrics and a 1-token completion every 5 s" if meta["probe"] == "busy"
             else "gpulse's defaults (check every 10 s)")
    print(f"\n### Scaling, gpulse ({meta['label']}); GPU interval 1 s; probe ({meta['probe']}): {probe}\n")
    SC = [c for c in COLS if c[0] not in ("size",)]
    extra = ["gzip KiB", "p50 gz ms", "stand-in req/s; OTLP push/s, KiB each"]
    print("| GPUs | probes | OTLP | " + " | ".join(c[1] for c in SC) + " | " + " | ".join(extra) + " |")
    print("|---" * (len(SC) + len(extra) + 3) + "|")
    for r in scaling:
        head = f"| {r['gpus']} | {r['probes']} | {'on' if r['otlp'] else 'off'} | "
        if "error" in r:
            print(head + " | ".join(["-"] * (len(SC) + len(extra) - 1)) + f" | failed: {r['error']} |")
            continue
        gz = f"{r['body_gz_bytes'] / 1024:.0f}" + ("" if r.get("gzip") else " (no gzip)")
        counted = "-"
        if r["probes"]:
            counted = f"{r['counted_per_s']:.1f}"
        elif r["otlp"]:
            counted = f"{r['counted_per_s']:.1f}, {r['counted_bytes_each'] / 1024:.0f}"
        print(head + " | ".join(cell(c, r) for c in SC) + f" | {gz} | {r['p50_gz_ms']:.2f} | {counted} |")
print()
PY
