#!/usr/bin/env bash
# `make bench`: Warren against RabbitMQ 3.10 under the same load, driven by warren-perf.
#
# Builds the release binaries, installs RabbitMQ with apt if it is missing, starts a private
# RabbitMQ node (bench@localhost on $BENCH_RABBITMQ_PORT, data in a temp dir) and a Warren
# (temp data dir, free port), then runs the scenario table below on both, alternating
# Warren, RabbitMQ, Warren, RabbitMQ... scenario by scenario over $BENCH_ROUNDS rounds. It prints
# the medians and Warren/RabbitMQ ratios as a Markdown table and saves it (with each run's JSON)
# under target/bench/. Both brokers are stopped at the end and on any error.
#
# Environment:
#   BENCH_QUICK=1          1 round of 3-second runs (smaller prefill and connection counts)
#   BENCH_ROUNDS=N         rounds (default 3)        BENCH_SECONDS=S   seconds per run (default 10)
#   BENCH_PREFILL=N        scenario 8's backlog (default 1000000)
#   BENCH_CONNECTIONS=N    scenario 9's idle connections (default 10000)
#   BENCH_SCALE=N          scenario 13's durable queues (default 100000; quick: 20000)
#   BENCH_RABBITMQ_PORT=P  AMQP port of the private RabbitMQ node (default 5697; dist port P+20000,
#                          stream-protocol port P+1 when stream scenarios run)
#   BENCH_STREAM_PREFILL=N messages in the stream 15d and 15e replay (default 5000000; quick 2000000)
#   BENCH_STREAM_AMQP_PREFILL=N  messages in the stream 15g drains (default 1000000; quick 500000)
#   BENCH_ONLY="1 7"       run only these scenario numbers
#   BENCH_NO_BUILD=1       use existing binaries; WARREN_BIN / WARREN_PERF_BIN override their paths
#
# Every run is one warren-perf invocation with --json and --broker-pid (the broker's CPU and RSS
# are read from /proc). A run that fails (a protocol error, a refused connection) is shown as
# ERR and makes the script exit non-zero after printing the table.
#
# The stream scenarios (15*) need each broker's stream-protocol listener: RabbitMQ's node then
# runs with the rabbitmq_stream plugin on port P+1, and Warren with --stream-listen on a free
# port. A Warren without --stream-listen has its stream-protocol runs shown as "skipped".
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WARREN_BIN=${WARREN_BIN:-$TARGET/release/warren}
PERF_BIN=${WARREN_PERF_BIN:-$TARGET/release/warren-perf}

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    ROUNDS=${BENCH_ROUNDS:-1} SECS=${BENCH_SECONDS:-3}
    PREFILL=${BENCH_PREFILL:-200000} CONNS=${BENCH_CONNECTIONS:-2000} SCALE=${BENCH_SCALE:-20000}
    SPREFILL=${BENCH_STREAM_PREFILL:-2000000} SPREFILL_AMQP=${BENCH_STREAM_AMQP_PREFILL:-500000}
else
    ROUNDS=${BENCH_ROUNDS:-3} SECS=${BENCH_SECONDS:-10}
    PREFILL=${BENCH_PREFILL:-1000000} CONNS=${BENCH_CONNECTIONS:-10000} SCALE=${BENCH_SCALE:-100000}
    SPREFILL=${BENCH_STREAM_PREFILL:-5000000} SPREFILL_AMQP=${BENCH_STREAM_AMQP_PREFILL:-1000000}
fi
RMQ_PORT=${BENCH_RABBITMQ_PORT:-5697}
RMQ_DIST_PORT=$((RMQ_PORT + 20000))
RMQ_NODE=bench$RMQ_PORT@localhost
RMQ_STREAM_PORT=$((RMQ_PORT + 1))
ONLY=${BENCH_ONLY:-}

log() { echo "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }


# ---------------------------------------------------------------------------------------------
# Build and install.
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building release binaries"
    cargo build --release --bin warren --bin warren-perf
fi
[[ -x $WARREN_BIN ]] || die "no Warren binary at $WARREN_BIN"
[[ -x $PERF_BIN ]] || die "no warren-perf binary at $PERF_BIN"

if ! command -v rabbitmq-server >/dev/null || ! command -v rabbitmqctl >/dev/null; then
    log "installing rabbitmq-server with apt"
    # Keep the package from starting its own default node on 5672.
    policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
    if [[ $policy_added == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi
RMQ_SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
[[ -x $RMQ_SERVER ]] || RMQ_SERVER=$(command -v rabbitmq-server)

# 10,000 connections need as many descriptors in the broker and in the tool.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
(( NOFILE > CONNS + 1000 )) || log "warning: ulimit -n is $NOFILE; $CONNS connections may not fit"

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$TARGET/bench
RAW=$OUT/raw-$STAMP
mkdir -p "$RAW"
WORK=$(mktemp -d /tmp/warren-bench.XXXXXX)
chmod 755 "$WORK"

# ---------------------------------------------------------------------------------------------
# Brokers.
RMQ_PID=""
WARREN_PID=""
WARREN_ADDR=""

rabbit_running() { rabbitmqctl -n "$RMQ_NODE" -q status >/dev/null 2>&1; }

stop_rabbit() {
    if rabbit_running; then
        timeout 60 rabbitmqctl -n "$RMQ_NODE" -q stop >/dev/null 2>&1 || true
    fi
    if [[ -n $RMQ_PID ]]; then
        for _ in $(seq 1 300); do kill -0 "$RMQ_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$RMQ_PID" 2>/dev/null || true
    fi
    RMQ_PID=""
}

# launch_rabbit [keep]: start the node (its data wiped unless "keep") without waiting for it.
launch_rabbit() {
    rabbit_running && die "a node $RMQ_NODE is already running (a previous bench?); stop it with: rabbitmqctl -n $RMQ_NODE stop"
    if (exec 3<>"/dev/tcp/127.0.0.1/$RMQ_PORT") 2>/dev/null; then die "port $RMQ_PORT is in use"; fi
    local dir=$WORK/rabbitmq streams=()
    if [[ ${1:-} != keep ]]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        chown -R rabbitmq: "$dir"
    fi
    # The stream plugin and its listener only when stream scenarios run (the other scenarios
    # see the node as before).
    if [[ $STREAMS == 1 ]]; then
        if (exec 3<>"/dev/tcp/127.0.0.1/$RMQ_STREAM_PORT") 2>/dev/null; then die "port $RMQ_STREAM_PORT is in use"; fi
        echo '[rabbitmq_stream].' >"$WORK/enabled_plugins"
        echo "stream.listeners.tcp.1 = 127.0.0.1:$RMQ_STREAM_PORT" >"$WORK/rabbitmq.conf"
        chmod 644 "$WORK/enabled_plugins" "$WORK/rabbitmq.conf"
        streams=(RABBITMQ_ENABLED_PLUGINS_FILE="$WORK/enabled_plugins" RABBITMQ_CONFIG_FILE="$WORK/rabbitmq.conf")
    fi
    (cd "$dir" && setsid env RABBITMQ_NODENAME=$RMQ_NODE RABBITMQ_NODE_PORT=$RMQ_PORT \
        RABBITMQ_DIST_PORT=$RMQ_DIST_PORT RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log "${streams[@]}" \
        su rabbitmq -s /bin/sh -c "ulimit -n $NOFILE; exec $RMQ_SERVER" >"$WORK/rabbitmq.out" 2>&1 &)
}

# await_port PORT SECONDS: wait until something accepts connections on 127.0.0.1:PORT.
await_port() {
    local i
    for i in $(seq 1 $(($2 * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# await_rabbit: wait until the node is up and take its pid.
await_rabbit() {
    local i dir=$WORK/rabbitmq
    for i in $(seq 1 90); do
        if timeout 30 rabbitmqctl -n "$RMQ_NODE" -q await_startup --timeout 20 >/dev/null 2>&1; then
            RMQ_PID=$(rabbitmqctl -n "$RMQ_NODE" -q eval 'os:getpid().' | tr -d '"[:space:]')
            [[ -n $RMQ_PID ]] || die "cannot read the RabbitMQ node's pid"
            if [[ $STREAMS == 1 ]] && ! await_port "$RMQ_STREAM_PORT" 30; then
                die "RabbitMQ's stream listener is not up on port $RMQ_STREAM_PORT (log: $dir/log)"
            fi
            return 0
        fi
        sleep 1
    done
    tail -20 "$WORK/rabbitmq.out" >&2 || true
    die "RabbitMQ did not start (log: $WORK/rabbitmq.out, $dir/log)"
}

start_rabbit() {
    launch_rabbit "$@"
    await_rabbit
}

stop_warren() {
    if [[ -n $WARREN_PID ]] && kill -0 "$WARREN_PID" 2>/dev/null; then
        kill "$WARREN_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$WARREN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$WARREN_PID" 2>/dev/null || true
    fi
    WARREN_PID=""
}

# launch_warren [keep]: start Warren (its data wiped unless "keep", then on the same port).
launch_warren() {
    local dir=$WORK/warren listen=127.0.0.1:0 stream=()
    if [[ ${1:-} == keep ]]; then
        listen=$WARREN_ADDR
    else
        rm -rf "$dir"
        mkdir -p "$dir/data"
    fi
    [[ -n $WARREN_STREAM_PORT ]] && stream=(--stream-listen "127.0.0.1:$WARREN_STREAM_PORT")
    "$WARREN_BIN" --listen "$listen" --http-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "${stream[@]}" --data-dir "$dir/data" >"$dir/stdout" 2>>"$dir/log" &
    WARREN_PID=$!
}

start_warren() {
    launch_warren "$@"
    local i dir=$WORK/warren
    for i in $(seq 1 100); do
        WARREN_ADDR=$(sed -n 's/^listening on //p' "$dir/stdout" | head -1)
        if [[ -n $WARREN_ADDR ]]; then
            if [[ -n $WARREN_STREAM_PORT ]] && ! await_port "$WARREN_STREAM_PORT" 10; then
                tail -20 "$dir/log" >&2 || true
                die "Warren's stream listener is not up on port $WARREN_STREAM_PORT"
            fi
            return 0
        fi
        kill -0 "$WARREN_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$dir/log" >&2 || true
    die "Warren did not start"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_warren
    stop_rabbit
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Scenarios: number|title|warren-perf arguments|metrics. A metric is label:json.path:up|down
# (whether higher or lower is better). A number ending in ! runs on a freshly started broker,
# so the memory it reads is that scenario's alone.
D="-z $SECS"
SCENARIOS=(
    "1|1p/1c, 16 B, transient, auto-ack|-x 1 -y 1 -s 16 -a $D|received msg/s:received_rate:up"
    "2|1p/1c, 16 B, manual ack, prefetch 1000, multi-ack 100|-x 1 -y 1 -s 16 -q 1000 -A 100 $D|received msg/s:received_rate:up"
    "2b|1p/1c, persistent 16 B, durable queue, no confirms, ack each, prefetch 100|-x 1 -y 1 -s 16 -f persistent -q 100 $D|received msg/s:received_rate:up|RSS growth B/s after 1st quarter:rss.growth_per_s:down|RSS max B:rss.max:down"
    "3|4p/4c/4 queues, 1 KiB, prefetch 1000, multi-ack 100|-x 4 -y 4 -s 1024 --queue-pattern bench-q%d --queue-pattern-from 1 --queue-pattern-to 4 -q 1000 -A 100 $D|received msg/s:received_rate:up"
    "4|fanout to 10 queues, 10 consumers, 16 B, auto-ack|-x 1 -y 10 -s 16 -a -e bench-fanout -t fanout --queue-pattern bench-fan%d --queue-pattern-from 1 --queue-pattern-to 10 $D|deliveries/s:received_rate:up"
    "5|topic, 10,000 bindings, random routing keys, 16 B|-x 1 -y 1 -s 16 -a -e bench-topic -t topic -K --bindings 10000 $D|published msg/s:sent_rate:up|deliveries/s:received_rate:up"
    "6a|persistent, durable queue, confirm window 1, acking consumer|-x 1 -y 1 -s 16 -f persistent -c 1 -q 1000 -A 100 $D|confirmed msg/s:sent_rate:up"
    "6b|persistent, durable queue, confirm window 100, acking consumer|-x 1 -y 1 -s 16 -f persistent -c 100 -q 1000 -A 100 $D|confirmed msg/s:sent_rate:up"
    "6c|persistent, durable queue, confirm window 1000, acking consumer|-x 1 -y 1 -s 16 -f persistent -c 1000 -q 1000 -A 100 $D|confirmed msg/s:sent_rate:up"
    "7|latency at 10,000 msg/s, 1p/1c, 16 B, auto-ack|-x 1 -y 1 -s 16 -a -r 10000 $D|p50 µs:latency_us.p50:down|p99 µs:latency_us.p99:down"
    "8!|prefill $PREFILL x 256 B, then drain (prefetch 1000, multi-ack 100)|-x 0 -y 1 -s 256 --prefill $PREFILL -q 1000 -A 100 --rss-after-cleanup|drain msg/s:received_rate:up|prefill msg/s:prefill.rate:up|RSS B/queued msg:rss.per_message:down|RSS B after the drained queue is deleted:rss.after_cleanup:down"
    "8b!|as 8, with a publisher at half of that broker's scenario-8 drain rate during the drain|-x 1 -y 1 -s 256 --prefill $PREFILL -C $PREFILL -q 1000 -A 100 -r @HALF_DRAIN@|received msg/s:received_rate:up|published msg/s:sent_rate:up"
    "9!|$CONNS idle connections (one channel each)|-x 0 -y 0 --connections $CONNS -z 2|RSS B/connection:rss.per_connection:down"
    "10|1 MiB messages, 1p/1c, prefetch 100, multi-ack 10|-x 1 -y 1 -s 1048576 -q 100 -A 10 $D|received MB/s:received_mb_s:up"
    "10b|16 MiB messages, 1p/1c, prefetch 10, ack each|-x 1 -y 1 -s 16777216 -q 10 $D|received MB/s:received_mb_s:up"
    "10c|1 MiB persistent messages, durable queue, prefetch 100, multi-ack 10|-x 1 -y 1 -s 1048576 -f persistent -q 100 -A 10 $D|received MB/s:received_mb_s:up"
    "11|connection churn: 8 clients x (connect, channel, 1 persistent publish + confirm, close)|--churn connections --churn-clients 8 $D|cycles/s:cycles_per_s:up|p99 µs connect-to-confirm:latency_us.p99:down|broker CPU ms/cycle:broker_cpu_ms_per_cycle:down|broker fds after:after.fds:down"
    "12|queue churn: 8 clients x (declare exclusive, bind, consume, publish, receive, delete)|--churn queues --churn-clients 8 $D|cycles/s:cycles_per_s:up|p99 µs:latency_us.p99:down|broker CPU ms/cycle:broker_cpu_ms_per_cycle:down"
    "13!|$SCALE durable queues with a binding each, then a restart|--declare-queues $SCALE -u bench-scale-|declares/s:declares_per_s:up|binds/s:binds_per_s:up|RSS B/idle queue:rss_per_queue:down|RSS B/binding:rss_per_binding:down|start-up s:startup.ready_s:down"
    "14a|tail latency at half of Warren's scenario-1 rate (16 B, transient, auto-ack)|-x 1 -y 1 -s 16 -a -r @HALF_SAT_1@ $D|p50 µs:latency_us.p50:down|p99 µs:latency_us.p99:down|p99.9 µs:latency_us.p999:down"
    "14b|tail latency at half of Warren's scenario-2b rate (persistent 16 B, ack each, prefetch 100)|-x 1 -y 1 -s 16 -f persistent -q 100 -r @HALF_SAT_2b@ $D|p50 µs:latency_us.p50:down|p99 µs:latency_us.p99:down|p99.9 µs:latency_us.p999:down"
    "15a|stream protocol: 1 producer, 16 B, 100 messages per Publish frame, 10,000 unconfirmed at most (stream-perf-test's defaults)|@STREAM_URI@ --stream-producers -x 1 -y 0 -s 16 $D|confirmed msg/s:confirmed_rate:up|confirmed MB/s:confirmed_mb_s:up"
    "15b|stream protocol: as 15a with 100 B messages|@STREAM_URI@ --stream-producers -x 1 -y 0 -s 100 $D|confirmed msg/s:confirmed_rate:up|confirmed MB/s:confirmed_mb_s:up"
    "15c|stream protocol: 1 producer (as 15a) and 1 consumer from first (credit 10 chunks, +1 per chunk), 16 B|@STREAM_URI@ --stream-producers --stream-consumers -x 1 -y 1 -s 16 $D|confirmed msg/s:confirmed_rate:up|received msg/s:received_rate:up|p50 µs:latency_us.p50:down|records/chunk:stream.records_per_chunk:up"
    "15d|stream protocol: 1 consumer replaying a stream of $SPREFILL x 16 B from first, again and again (credit 10, +1 per chunk)|@STREAM_URI@ --stream-producers --stream-consumers -x 0 -y 1 -s 16 --prefill $SPREFILL --replay $D|received msg/s:received_rate:up|received MB/s:received_mb_s:up|records/chunk:stream.records_per_chunk:up|prefill msg/s:prefill.rate:up"
    "15e|stream protocol: as 15d with 10 consumers; broker RSS while they replay|@STREAM_URI@ --stream-producers --stream-consumers -x 0 -y 10 -s 16 --prefill $SPREFILL --replay $D|received msg/s:received_rate:up|received MB/s:received_mb_s:up|RSS max over the start B:rss.max_growth:down|anonymous RSS max over the start B:rss.anon_max_growth:down|RSS growth B/s after 1st quarter:rss.growth_per_s:down"
    "15f|AMQP 0-9-1 publish with confirms (window 1000) into a stream, 1 stream-protocol consumer from first, 16 B|@STREAM_URI@ --stream-consumers -x 1 -y 1 -s 16 -c 1000 $D|confirmed msg/s:confirmed_rate:up|received msg/s:received_rate:up|p50 µs:latency_us.p50:down"
    "15g|AMQP 0-9-1 consume from a stream of $SPREFILL_AMQP x 16 B (published over AMQP, confirm window 1000): basic.qos 1000, x-stream-offset first, multi-ack 100|--stream-queue -x 0 -y 1 -s 16 --prefill $SPREFILL_AMQP -q 1000 -A 100|received msg/s:received_rate:up|prefill msg/s:prefill.rate:up"
)

selected() {
    [[ -z $ONLY ]] && return 0
    local n
    for n in $ONLY; do [[ $n == "$1" || $n == "${1%[a-z]}" ]] && return 0; done
    return 1
}

# Stream listeners are started only when a stream scenario is selected; Warren gets one only if
# it knows --stream-listen (else its stream-protocol runs are skipped).
STREAMS=0
for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r id _ <<<"$s"
    [[ $id == 15* ]] && selected "${id%!}" && STREAMS=1
done
WARREN_STREAM_PORT=""
WARREN_STREAMS_MISSING=0
if [[ $STREAMS == 1 ]]; then
    if "$WARREN_BIN" --help 2>/dev/null | grep -q -- '--stream-listen'; then
        WARREN_STREAM_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    else
        WARREN_STREAMS_MISSING=1
        log "this Warren has no --stream-listen: its stream-protocol runs (15a-15f) are skipped"
    fi
fi

INDEX=$RAW/index.tsv
: >"$INDEX"
FAILED=0

# run_one BROKER ID ROUND ARGS...
run_one() {
    local broker=$1 id=$2 round=$3
    shift 3
    local uri pid stream_uri="" a args=()
    if [[ $broker == warren ]]; then
        uri="amqp://guest:guest@$WARREN_ADDR/%2f" pid=$WARREN_PID
        [[ -n $WARREN_STREAM_PORT ]] && stream_uri="rabbitmq-stream://guest:guest@127.0.0.1:$WARREN_STREAM_PORT/%2f"
    else
        uri="amqp://guest:guest@127.0.0.1:$RMQ_PORT/%2f" pid=$RMQ_PID
        stream_uri="rabbitmq-stream://guest:guest@127.0.0.1:$RMQ_STREAM_PORT/%2f"
    fi
    for a in "$@"; do
        if [[ $a == @STREAM_URI@ ]]; then
            if [[ -z $stream_uri ]]; then
                log "round $round, scenario $id, $broker: skipped (no stream-protocol listener)"
                printf '%s\t%s\t%s\tSKIP\n' "$id" "$broker" "$round" >>"$INDEX"
                return 0
            fi
            args+=(--stream-uri "$stream_uri")
        else
            args+=("$a")
        fi
    done
    local base=$RAW/$id-$broker-r$round
    log "round $round, scenario $id, $broker"
    if "$PERF_BIN" -h "$uri" --broker-pid "$pid" --json "${args[@]}" >"$base.json" 2>"$base.log"; then
        printf '%s\t%s\t%s\t%s\n' "$id" "$broker" "$round" "$base.json" >>"$INDEX"
    else
        FAILED=1
        log "FAILED: $(tail -1 "$base.log")"
        printf '%s\t%s\t%s\tERR\n' "$id" "$broker" "$round" >>"$INDEX"
    fi
}

# measure_startup BROKER ID ROUND: restart the broker on its data (the queues the scenario just
# declared) and time until it answers a passive declare of the last one; the result goes into
# the scenario's JSON as "startup".
measure_startup() {
    local broker=$1 id=$2 round=$3 uri t
    local base=$RAW/$id-$broker-r$round
    [[ -s $base.json ]] || return 0
    log "round $round, scenario $id, $broker: restart with the declared queues"
    if [[ $broker == warren ]]; then
        uri="amqp://guest:guest@$WARREN_ADDR/%2f"
        stop_warren
        t=$(date +%s.%N)
        launch_warren keep
    else
        uri="amqp://guest:guest@127.0.0.1:$RMQ_PORT/%2f"
        stop_rabbit
        t=$(date +%s.%N)
        launch_rabbit keep
    fi
    if "$PERF_BIN" -h "$uri" --await-queue "bench-scale-$SCALE" --since "$t" -z 900 --json >"$base.startup.json" 2>"$base.startup.log"; then
        python3 - "$base.json" "$base.startup.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
run["startup"] = json.load(open(sys.argv[2]))
json.dump(run, open(sys.argv[1], "w"))
PY
    else
        FAILED=1
        log "FAILED: $(tail -1 "$base.startup.log")"
    fi
    # The next scenarios get a fresh broker, not one holding these queues.
    if [[ $broker == warren ]]; then
        stop_warren
        start_warren
    else
        await_rabbit
        stop_rabbit
        start_rabbit
    fi
}

log "starting Warren ($WARREN_BIN) and RabbitMQ ($RMQ_NODE on 127.0.0.1:$RMQ_PORT)"
start_warren
start_rabbit
log "Warren on $WARREN_ADDR (pid $WARREN_PID), RabbitMQ pid $RMQ_PID; $ROUNDS round(s) of ${SECS}s runs"

for round in $(seq 1 "$ROUNDS"); do
    for s in "${SCENARIOS[@]}"; do
        IFS='|' read -r id _title args _ <<<"$s"
        fresh=0
        [[ $id == *! ]] && fresh=1 && id=${id%!}
        selected "$id" || continue
        for broker in warren rabbitmq; do
            if [[ $fresh == 1 ]]; then
                if [[ $broker == warren ]]; then stop_warren; start_warren; else stop_rabbit; start_rabbit; fi
            fi
            run_args=$args
            if [[ $run_args == *@HALF_DRAIN@* ]]; then
                # Half of this broker's scenario-8 drain rate in this round.
                half=$(python3 -c 'import json,sys; print(max(1, int(json.load(open(sys.argv[1]))["received_rate"] / 2)))' \
                    "$RAW/8-$broker-r$round.json" 2>/dev/null) || half=""
                if [[ -z $half ]]; then
                    log "scenario $id needs scenario 8's result for $broker in round $round; skipped"
                    printf '%s\t%s\t%s\tERR\n' "$id" "$broker" "$round" >>"$INDEX"
                    FAILED=1
                    continue
                fi
                run_args=${run_args//@HALF_DRAIN@/$half}
            fi
            if [[ $run_args =~ @HALF_SAT_([0-9a-z]+)@ ]]; then
                # Half of Warren's rate in that scenario this round, for both brokers.
                src=${BASH_REMATCH[1]}
                half=$(python3 -c 'import json,sys; print(max(1, int(json.load(open(sys.argv[1]))["received_rate"] / 2)))' \
                    "$RAW/$src-warren-r$round.json" 2>/dev/null) || half=""
                if [[ -z $half ]]; then
                    log "scenario $id needs Warren's scenario-$src result in round $round; skipped"
                    printf '%s\t%s\t%s\tERR\n' "$id" "$broker" "$round" >>"$INDEX"
                    FAILED=1
                    continue
                fi
                run_args=${run_args//@HALF_SAT_$src@/$half}
            fi
            # shellcheck disable=SC2086 # $args is a word list on purpose
            run_one "$broker" "$id" "$round" $run_args
            if [[ $run_args == *--declare-queues* ]]; then
                measure_startup "$broker" "$id" "$round"
            fi
        done
    done
done

# ---------------------------------------------------------------------------------------------
# Allocations per message (deterministic; not compared against RabbitMQ).
ALLOC_TABLE=""
if [[ -z $ONLY && ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "counting allocations per message"
    if ALLOC_OUT=$(cargo bench --bench allocations 2>"$RAW/allocations.log"); then
        ALLOC_TABLE=$(grep '^|' <<<"$ALLOC_OUT")
    else
        log "warning: the allocation benchmark failed; see $RAW/allocations.log"
        FAILED=1
    fi
fi

# ---------------------------------------------------------------------------------------------
# Report: medians over rounds, Warren/RabbitMQ ratios.
REPORT=$OUT/bench-$STAMP.md
{
    echo "## Warren vs RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null | cut -d- -f1)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -m); medians of $ROUNDS round(s), ${SECS} s per run (alternating Warren, RabbitMQ); Warren $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo "Ratio is Warren/RabbitMQ; ↑ higher is better, ↓ lower is better. CPU is % of one core during the measurement (warren-perf / broker)."
    echo
    printf '%s\n' "${SCENARIOS[@]}" >"$RAW/scenarios.txt"
    python3 - "$INDEX" "$RAW/scenarios.txt" <<'PY'
import json, statistics, sys

index = sys.argv[1]
runs = {}
for line in open(index):
    sid, broker, rnd, path = line.rstrip("\n").split("\t")
    runs.setdefault((sid, broker), []).append(None if path == "ERR" else path if path == "SKIP" else json.load(open(path)))

def get(doc, path):
    for part in path.split("."):
        if not isinstance(doc, dict) or doc.get(part) is None:
            return None
        doc = doc[part]
    return doc

def med(docs, path):
    if docs and all(d == "SKIP" for d in docs):
        return "skipped"
    if not docs or any(d is None for d in docs):
        return "ERR"
    vals = [get(d, path) for d in docs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"

def spread(docs, path):
    vals = [get(d, path) for d in docs if d is not None]
    vals = [v for v in vals if isinstance(v, (int, float))]
    if len(vals) < 2:
        return ""
    return f" ({fmt(min(vals))}–{fmt(max(vals))})"

def worst(w, r, path, direction):
    """The least favourable of the per-round ratios (round i of Warren against round i of RabbitMQ)."""
    ratios = []
    for a, b in zip(w, r):
        va, vb = (get(a, path) if a else None), (get(b, path) if b else None)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and vb:
            ratios.append(va / vb)
    if len(ratios) < 2:
        return "-"
    return f"{(min(ratios) if direction == 'up' else max(ratios)):.2f}"

print("| # | scenario | metric | Warren (min–max) | RabbitMQ (min–max) | ratio of medians | worst round | CPU Warren run | CPU RabbitMQ run |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for spec in open(sys.argv[2]).read().splitlines():
    parts = spec.split("|")
    sid, title, metrics = parts[0].rstrip("!"), parts[1], parts[3:]
    if (sid, "warren") not in runs and (sid, "rabbitmq") not in runs:
        continue
    w, r = runs.get((sid, "warren"), []), runs.get((sid, "rabbitmq"), [])
    cpu = []
    for docs in (w, r):
        t, b = med(docs, "cpu.tool_pct"), med(docs, "cpu.broker_pct")
        cpu.append(t if t in ("ERR", "skipped") else "ERR" if b == "ERR" else f"{fmt(t)}% / {fmt(b)}%")
    for i, m in enumerate(metrics):
        label, path, direction = m.rsplit(":", 2)
        wv, rv = med(w, path), med(r, path)
        ratio = "-"
        # A ratio of signed values (memory growth that went negative) means nothing.
        if isinstance(wv, (int, float)) and isinstance(rv, (int, float)) and rv > 0 and wv >= 0:
            ratio = f"{wv / rv:.2f} {'↑' if direction == 'up' else '↓'}"
        first = i == 0
        print(f"| {sid if first else ''} | {title if first else ''} | {label} | {fmt(wv)}{spread(w, path)} "
              f"| {fmt(rv)}{spread(r, path)} | {ratio} | {worst(w, r, path, direction)} "
              f"| {cpu[0] if first else ''} | {cpu[1] if first else ''} |")
PY
    if [[ $WARREN_STREAMS_MISSING == 1 ]]; then
        echo
        echo "Warren's stream-protocol runs were skipped: $WARREN_BIN has no --stream-listen."
    fi
    if [[ -n $ALLOC_TABLE ]]; then
        echo
        echo "Heap allocations in the broker per message (counting allocator, \`cargo bench --bench allocations\`):"
        echo
        echo "$ALLOC_TABLE"
    fi
} >"$REPORT"
cp "$REPORT" "$OUT/latest.md"
echo
cat "$REPORT"
echo
log "saved $REPORT (raw runs in $RAW)"
if [[ $FAILED == 1 ]]; then
    die "some runs failed (ERR above); see the .log files in $RAW"
fi
