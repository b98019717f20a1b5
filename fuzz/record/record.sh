#!/usr/bin/env bash
# Record what real clients (pika, amqplib, lapin) send to Warren and split it into the fuzz
# seeds (fuzz/seeds/<target>/). Each client runs one session (fuzz/record/session_*) through
# a recording proxy (proxy.py) in front of a broker on a free loopback port.
#
#   fuzz/record/record.sh            (from the repository root; needs `make setup`'s python3/node)
#
# Installs pika into interop/.venv and amqplib into interop/node (as interop/run.sh does);
# lapin comes from its own small crate (fuzz/record/lapin-session).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/fuzz/record"
CARGO="${CARGO:-cargo}"
OUT="$(mktemp -d)"
DATA="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$OUT" "$DATA"; }
trap cleanup EXIT

PY="$ROOT/interop/.venv/bin/python"
if ! "$PY" -c 'import pika' 2>/dev/null; then
  PY="$OUT/venv/bin/python"
  python3 -m venv "$OUT/venv"
  "$PY" -m pip install --quiet --disable-pip-version-check pika==1.4.4
fi
[[ -d "$ROOT/interop/node/node_modules/amqplib" ]] || (cd "$ROOT/interop/node" && npm ci --no-audit --no-fund --loglevel=error)
"$CARGO" build --quiet --bin warren --manifest-path "$ROOT/Cargo.toml"
"$CARGO" build --quiet --manifest-path "$HERE/lapin-session/Cargo.toml"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

"$TARGET_DIR/debug/warren" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$DATA" > "$DATA/stdout" 2> "$DATA/log" &
PIDS+=($!)
ADDR=""
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's/^listening on //p' "$DATA/stdout" | head -n1)"
  [[ -n "$ADDR" ]] && break
  sleep 0.1
done
[[ -n "$ADDR" ]] || { echo "warren did not start" >&2; cat "$DATA/log" >&2; exit 1; }
python3 "$HERE/proxy.py" "${ADDR##*:}" "$OUT" "$OUT/port" &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -f "$OUT/port" ]] && break; sleep 0.1; done
export AMQP_URL="amqp://guest:guest@127.0.0.1:$(cat "$OUT/port")/%2f"

echo pika > "$OUT/.prefix"
"$PY" "$HERE/session_pika.py"
echo amqplib > "$OUT/.prefix"
NODE_PATH="$ROOT/interop/node/node_modules" node "$HERE/session_amqplib.js"
echo lapin > "$OUT/.prefix"
"${CARGO_TARGET_DIR:-$HERE/lapin-session/target}/debug/lapin-session"

# The definitions the broker stored for these sessions' durable entities.
find "$DATA" -name 'definitions*' -type f | while read -r f; do cp "$f" "$OUT/definitions-$(basename "$f")"; done
python3 "$HERE/split.py" "$OUT" "$ROOT/fuzz/seeds"
