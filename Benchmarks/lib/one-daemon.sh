# Shared by the tools that measure one chatrelayd against bench-upstream
# (Benchmarks/instructions, memory, compare): sourced, not run. They set BENCH_DIR and WORK
# and keep the processes they start in PIDS.

# Builds bench-upstream and bench-load when missing; sets TOOLS to where they are.
bench_tools() {
    TOOLS=$BENCH_DIR/.build/release
    [ -x "$TOOLS/bench-upstream" ] || swift build -c release --package-path "$BENCH_DIR" --product bench-upstream
    [ -x "$TOOLS/bench-load" ] || swift build -c release --package-path "$BENCH_DIR" --product bench-load
}

# The `pipeline:` entries of a named pipeline: default (keepalive, usage), passthrough,
# moderation (the default one and a `patterns` moderation stage, as Benchmarks/run has it),
# or shipped (keepalive, usage, retry, as etc/chatrelayd.yaml has it).
pipeline_stages() {
    case "$1" in
        default) echo '  - stage: keepalive
    interval: 15s
  - stage: usage' ;;
        passthrough) echo '  - stage: passthrough' ;;
        shipped) echo '  - stage: keepalive
    interval: 15s
  - stage: usage
  - stage: retry
    attempts: 3
    max_retry_after: 30s
    deadline: 60s' ;;
        moderation) echo '  - stage: keepalive
    interval: 15s
  - stage: usage
  - stage: moderation
    hooks:
      - kind: patterns
        rules:
          - {name: codename, literal: project nightingale, action: block}
          - {name: landmark, literal: zebra crossing, action: redact}' ;;
        *) echo "unknown pipeline: $1" >&2; return 2 ;;
    esac
}

# Starts bench-upstream on a free loopback port and writes $WORK/chatrelayd.yaml for it:
# socket $WORK/gateway.sock, every `bench-*` model to it, pipeline STAGES, and, when given,
# MAX_CONNECTIONS for both the server and the upstream.
start_upstream_and_config() {
    local stages=$1 max_connections=${2:-}
    # A folder kept from an earlier run (--out) still holds that run's port.
    rm -f "$WORK/port"
    "$TOOLS/bench-upstream" --host 127.0.0.1 --port 0 --port-file "$WORK/port" > "$WORK/upstream.log" 2>&1 &
    PIDS+=($!)
    until [ -s "$WORK/port" ]; do sleep 0.1; done
    local server_limit="" upstream_limit=""
    if [ -n "$max_connections" ]; then
        server_limit="
  max_connections: $max_connections"
        upstream_limit="
    max_connections: $max_connections"
    fi
    cat > "$WORK/chatrelayd.yaml" <<CONFIG
server:
  socket: $WORK/gateway.sock$server_limit
upstreams:
  - name: bench
    kind: openai-compatible
    base_url: http://127.0.0.1:$(cat "$WORK/port")/v1$upstream_limit
models:
  - prefix: "bench-"
    upstream: bench
pipeline:
$stages
CONFIG
}
