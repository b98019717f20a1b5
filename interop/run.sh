#!/usr/bin/env bash
# Cross-client interop suite against one broker: pika + kombu + a Celery worker (pytest), amqplib
# (node:test), the RabbitMQ Java client (JUnit 5 via Maven), amqp091-go (go test), and the
# management web UI in headless Chromium (puppeteer-core, node:test; needs $MGMT_URL).
#
#   interop/run.sh AMQP_URL        e.g. interop/run.sh amqp://guest:guest@127.0.0.1:5672/%2f
#
# First run: creates interop/.venv from python/requirements.txt and installs node/node_modules
# from node/package-lock.json (npm ci). Later runs skip both while the pinned files are
# unchanged (stamp files hold their hashes). Needs python3 (>= 3.10, with venv) and node 20 +
# npm; no root. Java and Go build offline from Debian's packages (`make setup` installs them):
# Maven resolves only from /usr/share/maven-repo (java/settings.xml) into java/.m2, and the Go
# module replaces amqp091-go with /usr/share/gocode (go/go.mod), caches under go/.cache.
# Exits non-zero if any test fails. Each suite is also bounded by `timeout`.
# INTEROP_SUITES="java go" runs (and installs for) only the suites named; the default is all five.
# The ui suite drives Debian's /usr/bin/chromium (`make setup` installs it; puppeteer-core
# downloads no browser) and saves screenshots under target/ui-screenshots.
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
UI_DIR="$HERE/ui"
PY_SUITE_TIMEOUT=150  # seconds for the whole pytest run (tests take ~30 s against RabbitMQ)
NODE_SUITE_TIMEOUT=40 # seconds for the whole node run (~2 s against RabbitMQ)
JAVA_SUITE_TIMEOUT=180 # seconds for Maven: compile + tests (~15-25 s warm, tests ~3 s)
GO_SUITE_TIMEOUT=120   # seconds for go vet + go test (~1-2 s warm, ~15 s cold compile)
UI_SUITE_TIMEOUT=400   # seconds for the browser test (~45 s: the overview waits for 8 polls of 5 s)

SUITES=" ${INTEROP_SUITES:-python node java go ui} "
want() { [[ "$SUITES" == *" $1 "* ]]; }
for s in $SUITES; do
  case "$s" in python|node|java|go|ui) ;; *) echo "interop: unknown suite '$s' in INTEROP_SUITES" >&2; exit 2;; esac
done

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- Python: venv with the pinned requirements -------------------------------------------
# (created even when the python suite is not selected: its interpreter writes the closing summary)
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
if want node; then
node_stamp="$(hash_of "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json") $(node --version)"
if [[ ! -d "$NODE_DIR/node_modules/amqplib" || "$(cat "$NODE_DIR/node_modules/.interop-stamp" 2>/dev/null)" != "$node_stamp" ]]; then
  echo "interop: npm ci in $NODE_DIR"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$node_stamp" > "$NODE_DIR/node_modules/.interop-stamp"
fi
fi

# --- UI: puppeteer-core (no browser download) from the lock file ------------------------------
if want ui; then
if [[ -z "${MGMT_URL:-}" ]]; then
  echo "interop: the ui suite needs MGMT_URL (the management listener, e.g. http://127.0.0.1:15672)" >&2
  exit 2
fi
if [[ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
  echo "interop: the ui suite needs ${CHROMIUM:-/usr/bin/chromium}; on Debian run 'make setup' (apt-get install chromium)" >&2
  exit 2
fi
ui_stamp="$(hash_of "$UI_DIR/package.json" "$UI_DIR/package-lock.json") $(node --version)"
if [[ ! -d "$UI_DIR/node_modules/puppeteer-core" || "$(cat "$UI_DIR/node_modules/.interop-stamp" 2>/dev/null)" != "$ui_stamp" ]]; then
  echo "interop: npm ci in $UI_DIR"
  (cd "$UI_DIR" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  echo "$ui_stamp" > "$UI_DIR/node_modules/.interop-stamp"
fi
fi

# --- Run every suite (all always run; the exit code reflects any failing) -----------------
RESULTS="$(mktemp -d)"  # JUnit reports, per run so that concurrent runs do not clash
trap 'rm -rf "$RESULTS"' EXIT
started=$SECONDS

py_rc=0
if want python; then
echo "interop: pytest (pika, kombu, celery) against $AMQP_URL"
(cd "$HERE/python" && timeout --kill-after=5 "$PY_SUITE_TIMEOUT" \
  "$VENV/bin/python" -m pytest --junitxml="$RESULTS/python.xml" -o junit_family=xunit2) || py_rc=$?
fi

node_rc=0
if want node; then
echo "interop: node --test (amqplib) against $AMQP_URL"
(cd "$NODE_DIR" && timeout --kill-after=5 "$NODE_SUITE_TIMEOUT" \
  node --test --test-timeout=20000 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=junit --test-reporter-destination="$RESULTS/node.xml" \
    test.js) || node_rc=$?
fi

ui_rc=0
ui_started=$SECONDS
if want ui; then
echo "interop: node --test (web UI in headless Chromium) against $MGMT_URL"
(cd "$UI_DIR" && timeout --kill-after=5 "$UI_SUITE_TIMEOUT" \
  node --test --test-timeout=240000 --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=junit --test-reporter-destination="$RESULTS/ui.xml" \
    ui.test.js) || ui_rc=$?
fi
ui_secs=$((SECONDS - ui_started))

java_rc=0
java_started=$SECONDS
if want java; then
echo "interop: mvn test (RabbitMQ Java client) against $AMQP_URL"
# Build output goes to this run's own directory (no stale classes or reports, no clash between
# concurrent runs); only the dependency cache java/.m2 is shared. Maven caches a failed lookup
# (a run before `make setup` installed the Debian jars) and would not look again for a day.
find "$HERE/java/.m2" -name '*.lastUpdated' -delete 2>/dev/null || true
(cd "$HERE/java" && timeout --kill-after=5 "$JAVA_SUITE_TIMEOUT" \
  mvn --batch-mode --no-transfer-progress -s settings.xml -Dmaven.repo.local="$HERE/java/.m2" \
    -Dinterop.build.dir="$RESULTS/java-target" -Dstyle.color=never test) || java_rc=$?
cp "$RESULTS"/java-target/surefire-reports/TEST-*.xml "$RESULTS/" 2>/dev/null || true
fi
java_secs=$((SECONDS - java_started))

go_rc=0
go_started=$SECONDS
if want go; then
echo "interop: go test (amqp091-go) against $AMQP_URL"
(cd "$HERE/go" &&
  export GOPATH="$HERE/go/.cache/gopath" GOMODCACHE="$HERE/go/.cache/mod" GOCACHE="$HERE/go/.cache/build" \
    GOPROXY=off GOFLAGS=-mod=readonly GOTOOLCHAIN=local GOTELEMETRY=off &&
  timeout --kill-after=5 "$GO_SUITE_TIMEOUT" go vet ./... &&
  timeout --kill-after=5 "$GO_SUITE_TIMEOUT" go test -count=1 -timeout 90s -v ./... \
    | tee "$RESULTS/go.log") || go_rc=$?
fi
go_secs=$((SECONDS - go_started))

# One closing line over all suites, counted from their JUnit reports (go test: its -v lines).
"$VENV/bin/python" - "$RESULTS" "$py_rc" "$node_rc" "$java_rc" "$go_rc" "$((SECONDS - started))" \
  "$java_secs" "$go_secs" "$ui_rc" "$ui_secs" <<'EOF'
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

results = pathlib.Path(sys.argv[1])
passed = failed = 0
for path in sorted(results.glob("*.xml")):
    try:
        cases = ET.parse(path).getroot().iter("testcase")
    except (OSError, ET.ParseError):
        continue  # the suite died before writing its report; its exit code says so
    for case in cases:
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is None:
            passed += 1
try:
    for line in (results / "go.log").read_text().splitlines():
        m = re.match(r"\s*--- (PASS|FAIL): ", line)
        if m:
            passed += m.group(1) == "PASS"
            failed += m.group(1) == "FAIL"
except OSError:
    pass
py_rc, node_rc, java_rc, go_rc, secs, java_secs, go_secs, ui_rc, ui_secs = sys.argv[2:11]
print(f"interop: pytest exit {py_rc}, node exit {node_rc}, java exit {java_rc} ({java_secs} s), "
      f"go exit {go_rc} ({go_secs} s), ui exit {ui_rc} ({ui_secs} s), {secs} s")
print(f"interop: {passed} passed, {failed} failed")
EOF

if [[ $py_rc -ne 0 || $node_rc -ne 0 || $java_rc -ne 0 || $go_rc -ne 0 || $ui_rc -ne 0 ]]; then
  exit 1
fi
