#!/usr/bin/env bash
# Start the warren binary given as $1 on a free loopback port, run interop/run.sh against it,
# stop it, and return run.sh's exit status. Used by `make interop`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:?usage: $0 path/to/warren}"
DATA="$(mktemp -d)"
LOG="$DATA/warren.log"
# TLS for the amqps tests: a CA, a server certificate for 127.0.0.1, and a client certificate
# for the user interop-cert (no password: it logs in with EXTERNAL).
TLS="$DATA/tls"
mkdir -p "$TLS"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=interop-ca -keyout "$TLS/ca.key" -out "$TLS/ca.pem"
for who in server client; do
  cn=$([[ $who == server ]] && echo localhost || echo interop-cert)
  ossl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$TLS/$who.key" -out "$TLS/$who.csr"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$TLS/$who.ext"
  ossl x509 -req -in "$TLS/$who.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 2 \
    -extfile "$TLS/$who.ext" -out "$TLS/$who.pem"
done
cat > "$DATA/warren.toml" <<EOF
[auth]
mechanisms = ["PLAIN", "AMQPLAIN", "EXTERNAL"]
[[auth.users]]
name = "interop-cert"
[[auth.permissions]]
user = "interop-cert"
vhost = "/"
[tls]
listen = "127.0.0.1:0"
certfile = "$TLS/server.pem"
keyfile = "$TLS/server.key"
cacertfile = "$TLS/ca.pem"
verify_peer = true
EOF
"$BIN" --config "$DATA/warren.toml" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --stream-listen 127.0.0.1:0 --data-dir "$DATA" > "$DATA/stdout" 2> "$LOG" &
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
TLS_ADDR="$(sed -n 's/^listening for amqps on //p' "$DATA/stdout" | head -n1)"
# The management HTTP listener (the API and the web UI), for the ui suite.
MGMT_ADDR="$(sed -n 's/^management API listening on //p' "$DATA/stdout" | head -n1)"
[[ -n "$MGMT_ADDR" ]] || { echo "warren printed no 'management API listening on' line" >&2; exit 1; }
export MGMT_URL="http://$MGMT_ADDR"
export AMQPS_URL="amqps://guest:guest@$TLS_ADDR/%2f" TLS_CA="$TLS/ca.pem" TLS_CLIENT_CERT="$TLS/client.pem" TLS_CLIENT_KEY="$TLS/client.key"
export MGMT_URL="http://$(sed -n 's/^management API listening on //p' "$DATA/stdout" | head -n1)"
# The stream protocol listener (port 5552's protocol), for the rstream tests.
STREAM_ADDR="$(sed -n 's/^stream protocol listening on //p' "$DATA/stdout" | head -n1)"
[[ -n "$STREAM_ADDR" ]] || { echo "warren printed no 'stream protocol listening on' line" >&2; exit 1; }
export STREAM_ADDR
status=0
"$HERE/run.sh" "amqp://guest:guest@$ADDR/%2f" || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- warren log ---" >&2
  tail -n 50 "$LOG" >&2
fi
exit $status
