# Warren — make targets. The two a newcomer needs: `make run` and `make test`.
CARGO ?= cargo
CONFIG ?= config/warren.toml
# Where cargo puts binaries (honours CARGO_TARGET_DIR).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: all build release install run test unit it interop definitions-roundtrip crash-test bench lint fmt setup clean fuzz fuzz-seeds

all: build

## Build the debug binary.
build:
	$(CARGO) build

## Build the optimised binary (target/release/warren).
release:
	$(CARGO) build --release

## Install warren and warrenctl into $(DESTDIR)$(PREFIX)/bin (PREFIX=/usr/local by default).
PREFIX ?= /usr/local
install: release
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(TARGET_DIR)/release/warren $(TARGET_DIR)/release/warrenctl $(DESTDIR)$(PREFIX)/bin/

## Start the broker on 127.0.0.1:5672 with the default config (Ctrl-C stops it).
run: release
	$(TARGET_DIR)/release/warren --config $(CONFIG)

## Everything: unit tests, integration tests (lapin + raw sockets), cross-client interop, and the
## definitions round trip through RabbitMQ 3.10 (skipped, saying so, without rabbitmq-server).
test: unit it interop definitions-roundtrip

## Unit tests of the sans-IO pieces (codec, state machines, matching tables).
unit:
	$(CARGO) test --lib --bins

## Integration tests: the real broker binary on a free loopback port, driven by lapin and raw sockets.
it:
	$(CARGO) test --test it

## pika, kombu, Celery (Python), amqplib (Node), the RabbitMQ Java client and amqp091-go (Go) against
## the real broker; installs the Python/Node clients locally (Java/Go come from `make setup`).
## INTEROP_SUITES="java go" runs only the suites named.
interop: build
	interop/with-warren.sh $(TARGET_DIR)/debug/warren

## Definitions exported by Warren, imported into a private RabbitMQ 3.10 node (started as the
## rabbitmq user on free loopback ports), exported again and imported into a fresh Warren: the
## two Warren exports must agree (~15 s; see interop/definitions_roundtrip.py).
definitions-roundtrip: build
	interop/definitions-roundtrip.sh $(TARGET_DIR)/debug/warren

## The long crash tests: 100 kill -9 cycles, then 20 simulated power cuts (tests/powercut),
## with confirming publishers and acking consumers; 0 confirmed messages may be lost.
## CRASH_CYCLES / POWER_CYCLES change the counts (`make test` runs 4 and 3 of them).
crash-test:
	CRASH_CYCLES=$${CRASH_CYCLES:-100} $(CARGO) test --test it confirmed_messages_survive_kill_9 -- --nocapture
	POWER_CYCLES=$${POWER_CYCLES:-20} $(CARGO) test --test it confirmed_messages_survive_power_loss -- --nocapture

## Side-by-side benchmarks against RabbitMQ 3.10 (installed with apt if missing; needs root).
## BENCH_QUICK=1 for a short version; see tests/bench/README.md.
bench:
	tests/bench/run.sh

## Coverage-guided fuzzing (cargo-fuzz/libFuzzer; installs cargo-fuzz if missing): each target in
## fuzz/fuzz_targets for FUZZ_SECONDS, one process at a time, from fuzz/seeds/<target> and the
## working corpus fuzz/corpus/<target>. A crash stops it (input in fuzz/artifacts/<target>/); copy
## it to fuzz/regressions/<target>/, where `make unit` replays it. See README "Fuzzing".
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= frames publish methods fields properties handshake definitions stream_frames amqp10 stream_log
FUZZ_FLAGS ?=
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t fuzz/seeds/$$t fuzz/artifacts/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS)s (log: fuzz/artifacts/$$t.log)"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O -s none $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_FLAGS) > fuzz/artifacts/$$t.log 2>&1 \
	    || { tail -n 40 fuzz/artifacts/$$t.log; exit 1; }; \
	  grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added))' fuzz/artifacts/$$t.log; \
	done

## Re-record the fuzz seeds from pika, amqplib and lapin sessions against the broker.
fuzz-seeds:
	fuzz/record/record.sh

## Formatting and lints.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## RabbitMQ 3.10 (Debian's rabbitmq-server): rabbitmqadmin and the definitions round trip.
RABBITMQ_SERVER ?= /usr/lib/rabbitmq/bin/rabbitmq-server

## Java and Go interop clients: Debian packages, built offline (no Maven Central, no Go proxy).
INTEROP_DEBS = openjdk-17-jdk-headless maven librabbitmq-client-java libslf4j-java junit5 \
	libsurefire-java libmaven-compiler-plugin-java libmaven-resources-plugin-java \
	golang-go golang-github-rabbitmq-amqp091-go-dev

## What a fresh Debian machine needs besides the Rust toolchain (python3-venv, node/npm, the
## JDK + Maven + RabbitMQ Java client + JUnit 5, Go + amqp091-go, Chromium for the web UI test,
## and RabbitMQ 3.10 for the rabbitmqadmin interop test and the definitions round trip; its
## package must not start its own node, so a policy-rc.d refuses service starts during the install).
setup:
	@command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
	@python3 -c 'import venv' 2>/dev/null || (apt-get update -qq && apt-get install -y -qq python3-venv)
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	@command -v openssl >/dev/null || (apt-get update -qq && apt-get install -y -qq openssl)
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	@dpkg -s $(INTEROP_DEBS) >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq $(INTEROP_DEBS))
	@test -x $(RABBITMQ_SERVER) || { added=0; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && \
			chmod +x /usr/sbin/policy-rc.d && added=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server; rc=$$?; \
		if [ $$added = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; }

clean:
	$(CARGO) clean
	rm -rf interop/.venv interop/node/node_modules interop/java/.m2 interop/java/target interop/go/.cache
