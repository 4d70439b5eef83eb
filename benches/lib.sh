# shellcheck shell=bash
# Sets work, pids and bin for the scripts that source it:
# shellcheck disable=SC2034
# Shared setup of the benchmark scripts (idle.sh, soak.sh, compare.sh, footprint.sh): sourced by
# each, never run. What they all need the same way: the repository root as the working
# directory, a scratch directory removed at exit with every started process stopped, the
# gpulse binary measured, the fake NVML built, free loopback ports, and an environment that
# does not change what is measured.

# Enters the repository root and makes $work (gpulse-NAME.XXXXXX under TMPDIR); at exit every
# PID in $pids is stopped and $work removed. A script with more to stop sets its own EXIT trap
# and calls bench_cleanup from it.
bench_start() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
    work=$(mktemp -d -t "gpulse-$1.XXXXXX")
    pids=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}

# $bin: GPULSE_BIN, else `cargo build --release` (CARGO_TARGET_DIR honoured).
bench_binary() {
    if [[ -n ${GPULSE_BIN:-} ]]; then
        bin=$GPULSE_BIN
    else
        cargo build --release --quiet
        bin="${CARGO_TARGET_DIR:-target}/release/gpulse"
    fi
}

# tests/fake_nvml built as $work/libnvidia-ml.so.1.
bench_fake_nvml() {
    cc -shared -fPIC -O2 -o "$work/libnvidia-ml.so.1" tests/fake_nvml/fake_nvml.c -ldl -lpthread
}

# Unsets inherited GPULSE_* and OTEL_* variables (config that would change what is measured),
# keeping the ones named.
bench_scrub_env() {
    local var keep
    for var in $(compgen -e); do
        [[ $var == GPULSE_* || $var == OTEL_* ]] || continue
        for keep in "$@"; do
            [[ $var == "$keep" ]] && continue 2
        done
        unset "$var"
    done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# An OTLP/HTTP sink on 127.0.0.1:PORT in the background (its PID added to $pids), answering
# every POST with 200 and an empty body, and returning once it listens (gpulse's first push
# may go out at once). It keeps OUT, a JSON file: "count" and "bytes" of the metric pushes
# (/v1/metrics), and "paths", the POSTs per path.
bench_otlp_sink() {
    python3 - "$1" "$2" <<'PY' &
import collections, http.server, json, os, sys
port, out = int(sys.argv[1]), sys.argv[2]
state = {"count": 0, "bytes": 0, "paths": collections.Counter()}
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        state["paths"][self.path] += 1
        if self.path == "/v1/metrics":
            state["count"] += 1
            state["bytes"] += n
        with open(out + ".tmp", "w") as f:
            json.dump(state, f)
        # Whole or not at all: the reader never sees half a file.
        os.replace(out + ".tmp", out)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
PY
    pids+=($!)
    wait_port "$1"
}

# Waits (at most 10 s) until something listens on 127.0.0.1:PORT; fails the script otherwise.
wait_port() {
    python3 - "$1" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"nothing listens on {sys.argv[1]}")
        time.sleep(0.05)
PY
}
