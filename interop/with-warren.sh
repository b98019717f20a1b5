#!/usr/bin/env bash
# Start the warren binary given as $1 on a free loopback port, run interop/run.sh against it,
# stop it, and return run.sh's exit status. Used by `make interop`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:?usage: $0 path/to/warren}"
DATA="$(mktemp -d)"
LOG="$DATA/warren.log"
"$BIN" --listen 127.0.0.1:0 --data-dir "$DATA" > "$DATA/stdout" 2> "$LOG" &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
# Wait (bounded) for the broker's "listening on ADDR" line.
ADDR=""
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's/^listening on //p' "$DATA/stdout" | head -n1)"
  [[ -n "$ADDR" ]] && break
  kill -0 "$PID" 2>/dev/null || { echo "warren exited early:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$ADDR" ]] || { echo "warren did not start listening" >&2; cat "$LOG" >&2; exit 1; }
echo "interop: warren listening on $ADDR"
status=0
"$HERE/run.sh" "amqp://guest:guest@$ADDR/%2f" || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- warren log ---" >&2
  tail -n 50 "$LOG" >&2
fi
exit $status
