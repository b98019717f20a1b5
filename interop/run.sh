#!/usr/bin/env bash
# Cross-client interop suite: pika + kombu + a Celery worker (pytest) and amqplib (node:test) against one broker.
#
#   interop/run.sh AMQP_URL        e.g. interop/run.sh amqp://guest:guest@127.0.0.1:5672/%2f
#
# First run: creates interop/.venv from python/requirements.txt and installs node/node_modules
# from node/package-lock.json (npm ci). Later runs skip both while the pinned files are
# unchanged (stamp files hold their hashes). Needs python3 (>= 3.10, with venv) and node 20 +
# npm; no root. Exits non-zero if any test fails. Each suite is also bounded by `timeout`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
URL="${1:-${AMQP_URL:-}}"
if [[ -z "$URL" ]]; then
  echo "usage: $0 AMQP_URL   (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)" >&2
  exit 2
fi
export AMQP_URL="$URL"
export PYTHONDONTWRITEBYTECODE=1
export NPM_CONFIG_UPDATE_NOTIFIER=false

PYTHON="${PYTHON:-python3}"
VENV="$HERE/.venv"
NODE_DIR="$HERE/node"
PY_SUITE_TIMEOUT=150  # seconds for the whole pytest run (tests take ~30 s against RabbitMQ)
NODE_SUITE_TIMEOUT=40 # seconds for the whole node run (~2 s against RabbitMQ)

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- Python: venv with the pinned requirements -------------------------------------------
py_stamp="$(hash_of "$HERE/python/requirements.txt") $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.interop-stamp" 2>/dev/null)" != "$py_stamp" ]]; then
  echo "interop: creating $VENV"
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    echo "interop: '$PYTHON -m venv' failed; on Debian install the python3-venv package" >&2
    exit 2
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$HERE/python/requirements.txt"
  echo "$py_stamp" > "$VENV/.interop-stamp"
fi

# --- Node: amqplib from the lock file ----------------------------------------------------
node_stamp="$(hash_of "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json") $(node --version)"
if [[ ! -d "$NODE_DIR/node_modules/amqplib" || "$(cat "$NODE_DIR/node_modules/.interop-stamp" 2>/dev/null)" != "$node_stamp" ]]; then
  echo "interop: npm ci in $NODE_DIR"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$node_stamp" > "$NODE_DIR/node_modules/.interop-stamp"
fi

# --- Run both suites (both always run; the exit code reflects either failing) -------------
RESULTS="$(mktemp -d)"  # JUnit reports, per run so that concurrent runs do not clash
trap 'rm -rf "$RESULTS"' EXIT
started=$SECONDS

echo "interop: pytest (pika, kombu, celery) against $AMQP_URL"
py_rc=0
(cd "$HERE/python" && timeout --kill-after=5 "$PY_SUITE_TIMEOUT" \
  "$VENV/bin/python" -m pytest --junitxml="$RESULTS/python.xml" -o junit_family=xunit2) || py_rc=$?

echo "interop: node --test (amqplib) against $AMQP_URL"
node_rc=0
(cd "$NODE_DIR" && timeout --kill-after=5 "$NODE_SUITE_TIMEOUT" \
  node --test --test-timeout=20000 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=junit --test-reporter-destination="$RESULTS/node.xml" \
    test.js) || node_rc=$?

# One closing line over both suites, counted from their JUnit reports.
"$VENV/bin/python" - "$RESULTS/python.xml" "$RESULTS/node.xml" "$py_rc" "$node_rc" "$((SECONDS - started))" <<'EOF'
import sys
import xml.etree.ElementTree as ET

passed = failed = 0
for path in sys.argv[1:3]:
    try:
        cases = ET.parse(path).getroot().iter("testcase")
    except (OSError, ET.ParseError):
        continue  # the suite died before writing its report; its exit code says so
    for case in cases:
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is None:
            passed += 1
py_rc, node_rc, secs = sys.argv[3:6]
print(f"interop: pytest exit {py_rc}, node exit {node_rc}, {secs} s")
print(f"interop: {passed} passed, {failed} failed")
EOF

if [[ $py_rc -ne 0 || $node_rc -ne 0 ]]; then
  exit 1
fi
