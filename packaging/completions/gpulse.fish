# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_gpulse_global_optspecs
    string join \n c/config= listen= nvml-lib= interval= log-level= h/help V/version
end

function __fish_gpulse_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_gpulse_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_gpulse_using_subcommand
    set -l cmd (__fish_gpulse_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c gpulse -n "__fish_gpulse_needs_command" -s c -l config -d 'TOML config file' -r -F
complete -c gpulse -n "__fish_gpulse_needs_command" -l listen -d 'Address for /metrics and the API (overrides http.listen): IP:PORT, HOST:PORT, [IPv6]:PORT, :PORT or PORT' -r
complete -c gpulse -n "__fish_gpulse_needs_command" -l nvml-lib -d 'NVML library to load (overrides gpu.nvml_library; default: system libnvidia-ml.so.1)' -r
complete -c gpulse -n "__fish_gpulse_needs_command" -l interval -d 'GPU sampling interval, e.g. 1s or 500ms (overrides gpu.interval; the host is sampled every host.interval, 5s by default)' -r
complete -c gpulse -n "__fish_gpulse_needs_command" -l log-level -d 'Log filter, e.g. info or debug (overrides log.level)' -r
complete -c gpulse -n "__fish_gpulse_needs_command" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_needs_command" -s V -l version -d 'Print version'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "run" -d 'Run the agent (the default when no command is given)'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "demo" -d 'Run the agent with simulated GPUs, so every metric is visible without a GPU'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "config" -d 'Check or print configuration'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "bench" -d 'A short, bounded load test against an inference server (a configured probe, or --url and --kind): concurrency steps, tokens/s, TTFT and inter-token percentiles, the highest concurrency within the SLOs and the cost per 1M tokens there. Exits 0 when it completed, 1 when every request failed, 2 on a usage or config error'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "scan" -d 'Sample the GPUs and the host once, evaluate health, print it and exit: 0 healthy, 1 degraded (or no GPU), 3 unhealthy, 2 usage or config error'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "health" -d 'Act on a running agent\'s GPU health (`gpulse health clear GPU|all`)'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "verify" -d 'Check a signed score report offline: its signature (against --pubkey, or the key it embeds: integrity only), the nonce sent (--nonce) and the hash chain (--chain). Exits 0 valid, 1 invalid (the reason on one line), 2 on a usage error or an unreadable file'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "wrap" -d 'Run CMD as a child with the agent beside it, inside the workload\'s container: signals are forwarded, the exit code is passed through, every run is recorded, and a probe is configured from the command line. `gpulse wrap [FLAGS] -- CMD [ARGS...]`'
complete -c gpulse -n "__fish_gpulse_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gpulse -n "__fish_gpulse_using_subcommand run" -s c -l config -d 'TOML config file' -r -F
complete -c gpulse -n "__fish_gpulse_using_subcommand run" -l listen -d 'Address for /metrics and the API (overrides http.listen): IP:PORT, HOST:PORT, [IPv6]:PORT, :PORT or PORT' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand run" -l nvml-lib -d 'NVML library to load (overrides gpu.nvml_library; default: system libnvidia-ml.so.1)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand run" -l interval -d 'GPU sampling interval, e.g. 1s or 500ms (overrides gpu.interval; the host is sampled every host.interval, 5s by default)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand run" -l log-level -d 'Log filter, e.g. info or debug (overrides log.level)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand run" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand demo" -l gpus -d 'Number of simulated GPUs' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand demo" -s c -l config -d 'TOML config file' -r -F
complete -c gpulse -n "__fish_gpulse_using_subcommand demo" -l listen -d 'Address for /metrics and the API (overrides http.listen): IP:PORT, HOST:PORT, [IPv6]:PORT, :PORT or PORT' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand demo" -l nvml-lib -d 'NVML library to load (overrides gpu.nvml_library; default: system libnvidia-ml.so.1)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand demo" -l interval -d 'GPU sampling interval, e.g. 1s or 500ms (overrides gpu.interval; the host is sampled every host.interval, 5s by default)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand demo" -l log-level -d 'Log filter, e.g. info or debug (overrides log.level)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand demo" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and not __fish_seen_subcommand_from check example help" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and not __fish_seen_subcommand_from check example help" -f -a "check" -d 'Validate a config file (with GPULSE_* environment overrides applied)'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and not __fish_seen_subcommand_from check example help" -f -a "example" -d 'Print a fully commented example config holding every default'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and not __fish_seen_subcommand_from check example help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and __fish_seen_subcommand_from example" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "check" -d 'Validate a config file (with GPULSE_* environment overrides applied)'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "example" -d 'Print a fully commented example config holding every default'
complete -c gpulse -n "__fish_gpulse_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -s c -l config -d 'TOML config file: its [[probe]]s and [score] latency_objective, price_per_hour, currency (GPULSE_* variables apply as for `run`)' -r -F
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l probe -d 'The configured [[probe]] to load (default: the only one configured)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l url -d 'The server\'s URL (http(s)://host:port[/base]) instead of a configured probe; needs --kind' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l kind -d 'The server\'s kind with --url: vllm, tgi, sglang, ollama, llamacpp or openai' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l model -d 'Model named in the requests (default: the probe\'s inference_model or expected_model, else the first model the server lists)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l concurrency -d 'Concurrent requests of each step, comma-separated (at most 16 steps, each 1–256)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l step-duration -d 'How long each step starts requests (steps × duration at most 1h)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l max-tokens -d 'Output tokens asked per request (1–4096)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l prompt-tokens -d 'Words of the built-in fixed prompt, about as many tokens (default 128)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l prompt -d 'A fixed prompt of your own instead of the built-in one (at most 64 KiB)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l ttft-slo -d 'Time to first token a request must meet (default: the probe\'s ttft_slo)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l latency-slo -d 'End-to-end latency a request must meet (default: the probe\'s latency_slo)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l max-requests -d 'Requests started per step at most' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l timeout -d 'Deadline of one request (default: the probe\'s inference_timeout; at most 10m)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l no-ignore-eos -d 'Let the server stop at end-of-sequence (by default vLLM, SGLang and llama.cpp are asked to ignore it, so every answer is --max-tokens long)'
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -l json -d 'Print `gpulse.bench/v1` JSON on stdout instead of a table'
complete -c gpulse -n "__fish_gpulse_using_subcommand bench" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -l format -d 'Output and exit codes: `table` (default), `json`, `npd` (node-problem-detector\'s custom plugin: exit 0 OK, 1 problem, 2 unknown; one line of at most 80 bytes) or `nagios` (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; with perfdata)' -r -f -a "table\t''
json\t''
npd\t''
nagios\t''"
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -s c -l config -d 'TOML config file' -r -F
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -l listen -d 'Address for /metrics and the API (overrides http.listen): IP:PORT, HOST:PORT, [IPv6]:PORT, :PORT or PORT' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -l nvml-lib -d 'NVML library to load (overrides gpu.nvml_library; default: system libnvidia-ml.so.1)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -l interval -d 'GPU sampling interval, e.g. 1s or 500ms (overrides gpu.interval; the host is sampled every host.interval, 5s by default)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -l log-level -d 'Log filter, e.g. info or debug (overrides log.level)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -l json -d 'Print `gpulse.health/v1` JSON instead of a table (the same as `--format json`)'
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -l allow-no-gpu -d 'Exit 0 when no GPU can be read (no NVML, no driver) instead of 1'
complete -c gpulse -n "__fish_gpulse_using_subcommand scan" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and not __fish_seen_subcommand_from clear help" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and not __fish_seen_subcommand_from clear help" -f -a "clear" -d 'Clear the sticky health reasons of one GPU (index or UUID) or of `all` after a repair, on a running agent: reasons whose cause was last seen before now are dropped, new ones count again; recorded as a `health_cleared` event. Exits 0 cleared, 1 refused or unreachable, 2 on a usage error'
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and not __fish_seen_subcommand_from clear help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and __fish_seen_subcommand_from clear" -l url -d 'The agent\'s base URL (http or https)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and __fish_seen_subcommand_from clear" -l token-file -d 'File holding the API\'s bearer token (the agent\'s http.bearer_token_file); without a token, the agent accepts a clear from loopback only' -r -F
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and __fish_seen_subcommand_from clear" -l ca-file -d 'PEM CA file to trust for an https URL, besides the built-in roots' -r -F
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and __fish_seen_subcommand_from clear" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and __fish_seen_subcommand_from help" -f -a "clear" -d 'Clear the sticky health reasons of one GPU (index or UUID) or of `all` after a repair, on a running agent: reasons whose cause was last seen before now are dropped, new ones count again; recorded as a `health_cleared` event. Exits 0 cleared, 1 refused or unreachable, 2 on a usage error'
complete -c gpulse -n "__fish_gpulse_using_subcommand health; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gpulse -n "__fish_gpulse_using_subcommand verify" -l pubkey -d 'The key the report must be signed with: 64 hex digits, base64, or a file holding either or a /v1/identity document. Without it the report\'s own key is used, which proves integrity only, not origin' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand verify" -l chain -d 'Chained reports (files, or directories of *.json) the report must fit: sorted by seq, every prev_report_sha256 the hash of the report before. Give it after REPORT.json' -r -F
complete -c gpulse -n "__fish_gpulse_using_subcommand verify" -l nonce -d 'The nonce sent with the request (hex): the report must carry it' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand verify" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -s c -l config -d 'TOML config file' -r -F
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l listen -d 'Address for /metrics and the API (overrides http.listen): IP:PORT, HOST:PORT, [IPv6]:PORT, :PORT or PORT' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l nvml-lib -d 'NVML library to load (overrides gpu.nvml_library; default: system libnvidia-ml.so.1)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l interval -d 'GPU sampling interval, e.g. 1s or 500ms (overrides gpu.interval; the host is sampled every host.interval, 5s by default)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l log-level -d 'Log filter, e.g. info or debug (overrides log.level)' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l probe-kind -d 'Kind of the child\'s probe (vllm, tgi, triton, kserve, sglang, ollama, llamacpp, openai, http, tcp), overriding the one inferred from the command line' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l probe-url -d 'URL of the child\'s probe (http://host:port[/base]), overriding the inferred one' -r
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l no-auto-probe -d 'Do not configure a probe from the command line (as wrap.auto_probe = false)'
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l no-auto-metrics -d 'The auto probe does not scrape the server\'s /metrics (as wrap.auto_metrics = false)'
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -l no-auto-inference -d 'The auto probe sends no synthetic request (as wrap.auto_inference = false)'
complete -c gpulse -n "__fish_gpulse_using_subcommand wrap" -s h -l help -d 'Print help'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "run" -d 'Run the agent (the default when no command is given)'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "demo" -d 'Run the agent with simulated GPUs, so every metric is visible without a GPU'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "config" -d 'Check or print configuration'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "bench" -d 'A short, bounded load test against an inference server (a configured probe, or --url and --kind): concurrency steps, tokens/s, TTFT and inter-token percentiles, the highest concurrency within the SLOs and the cost per 1M tokens there. Exits 0 when it completed, 1 when every request failed, 2 on a usage or config error'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "scan" -d 'Sample the GPUs and the host once, evaluate health, print it and exit: 0 healthy, 1 degraded (or no GPU), 3 unhealthy, 2 usage or config error'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "health" -d 'Act on a running agent\'s GPU health (`gpulse health clear GPU|all`)'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "verify" -d 'Check a signed score report offline: its signature (against --pubkey, or the key it embeds: integrity only), the nonce sent (--nonce) and the hash chain (--chain). Exits 0 valid, 1 invalid (the reason on one line), 2 on a usage error or an unreadable file'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "wrap" -d 'Run CMD as a child with the agent beside it, inside the workload\'s container: signals are forwarded, the exit code is passed through, every run is recorded, and a probe is configured from the command line. `gpulse wrap [FLAGS] -- CMD [ARGS...]`'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and not __fish_seen_subcommand_from run demo config bench scan health verify wrap help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "check" -d 'Validate a config file (with GPULSE_* environment overrides applied)'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "example" -d 'Print a fully commented example config holding every default'
complete -c gpulse -n "__fish_gpulse_using_subcommand help; and __fish_seen_subcommand_from health" -f -a "clear" -d 'Clear the sticky health reasons of one GPU (index or UUID) or of `all` after a repair, on a running agent: reasons whose cause was last seen before now are dropped, new ones count again; recorded as a `health_cleared` event. Exits 0 cleared, 1 refused or unreachable, 2 on a usage error'
