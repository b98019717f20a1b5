#!/usr/bin/env bash
# Definitions round trip Warren -> RabbitMQ 3.10 -> Warren; see definitions_roundtrip.py.
#   interop/definitions-roundtrip.sh path/to/warren      (`make definitions-roundtrip`)
# Skips (exit 0, saying so) only when rabbitmq-server is not installed; ROUNDTRIP_KEEP=1 keeps
# the exports and logs in the temporary directory it names.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec timeout --kill-after=10 300 python3 "$HERE/definitions_roundtrip.py" "${1:?usage: $0 path/to/warren}"
