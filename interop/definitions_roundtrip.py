#!/usr/bin/env python3
"""Definitions round trip Warren -> RabbitMQ 3.10 -> Warren (`make definitions-roundtrip`).

1. A fresh Warren gets users (tags, a password, user limits), vhosts (description, tags, default
   queue type, limits), permissions, topic permissions, policies, an operator policy, the cluster
   name, durable queues (classic with arguments, quorum, stream), exchanges (alternate exchange,
   internal) and bindings (to queues and exchanges, with arguments) through its management API;
   its `GET /api/definitions` is export A.
2. A private RabbitMQ 3.10 node (own ports, own data directory, started as the `rabbitmq` user,
   rabbitmq_management on its own port) imports A with `POST /api/definitions`; its export is R.
3. A second fresh Warren imports R; its export is B.
4. A and B must describe the same broker once each side's additions are set aside
   (`rabbit_version`, `product_*`, RabbitMQ's `internal_cluster_id`, queue `type` fields,
   operator-policy definitions as lists of pairs). RabbitMQ 3.10's HTTP export leaves out vhost
   metadata (description, tags, default queue type), so for vhosts only the names are compared
   through R, and the metadata is checked on RabbitMQ's own `GET /api/vhosts/{name}` instead.
   Every difference between A, R and B is printed.

Usage: definitions_roundtrip.py WARREN_BINARY. Exits 0 when the round trip holds, 1 when it
does not, and 0 with a "skipped:" line when rabbitmq-server is not installed.
Binds to 127.0.0.1 only; everything it starts is stopped at the end.
"""

import base64
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

RMQ_SERVER = os.environ.get("RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server")
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
START_TIMEOUT = 90  # seconds for a broker to come up


def log(msg):
    print(f"roundtrip: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base, method, path, body=None, expect=(200, 201, 204)):
    """One management API call; the decoded JSON answer (None when empty)."""
    data = None
    if body is not None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"authorization": AUTH, "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    if status not in expect:
        raise RuntimeError(f"{method} {base}{path}: HTTP {status} {text[:500]!r}")
    return json.loads(text) if text else None


def q(name):
    return urllib.parse.quote(name, safe="")


class Warren:
    def __init__(self, binary, work, label):
        self.dir = os.path.join(work, label)
        os.makedirs(self.dir)
        self.log = open(os.path.join(self.dir, "warren.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
             "--data-dir", os.path.join(self.dir, "data")],
            stdout=subprocess.PIPE, stderr=self.log)
        self.base = None
        # Read the start lines ("management API listening on ADDR", then "listening on ADDR").
        fd, pending, lines = self.proc.stdout.fileno(), b"", []
        os.set_blocking(fd, False)
        deadline = time.monotonic() + START_TIMEOUT
        while not any(line.startswith("listening on ") for line in lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"warren ({label}) did not start; see {self.log.name}")
            selectors_ = selectors.DefaultSelector()
            selectors_.register(fd, selectors.EVENT_READ)
            if selectors_.select(timeout=0.5):
                pending += os.read(fd, 65536)
                *done, pending = pending.split(b"\n")
                lines += [d.decode() for d in done]
            selectors_.close()
        for line in lines:
            if line.startswith("management API listening on "):
                self.base = "http://" + line.split()[-1]
        if self.base is None:
            raise RuntimeError("warren printed no 'management API listening on' line")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RabbitMQ:
    """A private RabbitMQ node with the management plugin, its data in `work`."""

    def __init__(self, work):
        self.dir = os.path.join(work, "rabbitmq")
        os.makedirs(self.dir)
        amqp, mgmt, dist = free_port(), free_port(), free_port()
        self.node = f"roundtrip{amqp}@localhost"
        self.base = f"http://127.0.0.1:{mgmt}"
        conf = os.path.join(self.dir, "rabbitmq.conf")
        with open(conf, "w") as f:
            f.write(f"listeners.tcp.1 = 127.0.0.1:{amqp}\n"
                    f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {mgmt}\n")
        plugins = os.path.join(self.dir, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[rabbitmq_management].\n")
        env = {
            "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(amqp), "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_CONFIG_FILE": conf,
            "RABBITMQ_ENABLED_PLUGINS_FILE": plugins,
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
        }
        self.out = open(os.path.join(work, "rabbitmq.out"), "w")
        if os.geteuid() == 0:
            # As root: run it as the rabbitmq user (as the package does), in directories it owns.
            shutil.chown(work, "rabbitmq")
            for root, dirs, files in os.walk(self.dir):
                for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                    shutil.chown(name, "rabbitmq", "rabbitmq")
            assigns = " ".join(f"{k}={v}" for k, v in env.items())
            cmd = ["su", "rabbitmq", "-s", "/bin/sh", "-c", f"{assigns} exec {RMQ_SERVER}"]
            self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.dir)
        else:
            self.proc = subprocess.Popen([RMQ_SERVER], env={**os.environ, **env}, stdout=self.out,
                                         stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                api(self.base, "GET", "/api/overview")
                return
            except (OSError, RuntimeError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ did not start; see {self.out.name} and {self.dir}/log")
            time.sleep(0.25)

    def stop(self):
        ctl = shutil.which("rabbitmqctl") or "/usr/lib/rabbitmq/bin/rabbitmqctl"
        if self.proc.poll() is None:
            subprocess.run([ctl, "-n", self.node, "-q", "stop"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60, check=False)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the node is left
        except ProcessLookupError:
            pass
        self.proc.wait()


def populate(w):
    """Everything a definitions file can hold, through Warren's API."""
    put = lambda path, body=None: api(w, "PUT", path, body if body is not None else {})  # noqa: E731
    put("/api/cluster-name", {"name": "roundtrip-cluster"})
    put("/api/vhosts/rt-a", {"description": "tenant A", "tags": "prod,eu", "default_queue_type": "classic"})
    put("/api/vhosts/rt-b")
    put("/api/users/alice", {"password": "alice-pw", "tags": "management"})
    put("/api/users/bob", {"password": "bob-pw", "tags": "monitoring,policymaker"})
    put("/api/users/carol", {"password": "carol-pw", "tags": ""})
    put("/api/user-limits/bob/max-connections", {"value": 5})
    put("/api/user-limits/bob/max-channels", {"value": 50})
    put("/api/permissions/rt-a/alice", {"configure": "^a\\.", "write": "^a\\.", "read": ".*"})
    put("/api/permissions/rt-b/bob", {"configure": "", "write": ".*", "read": ".*"})
    put("/api/topic-permissions/rt-a/alice", {"exchange": "amq.topic", "write": "^a\\.", "read": ".*"})
    put("/api/policies/rt-a/lengths", {"pattern": "^q\\.", "apply-to": "queues", "priority": 1,
                                       "definition": {"max-length": 100, "overflow": "reject-publish"}})
    put("/api/policies/rt-b/ttl", {"pattern": ".*", "apply-to": "all", "definition": {"message-ttl": 60000}})
    put("/api/operator-policies/rt-a/cap", {"pattern": ".*", "apply-to": "queues", "priority": 0,
                                            "definition": {"max-length": 1000}})
    put("/api/vhost-limits/rt-a/max-connections", {"value": 10})
    put("/api/vhost-limits/rt-a/max-queues", {"value": 20})
    put("/api/exchanges/rt-a/unrouted", {"type": "fanout", "durable": True})
    put("/api/exchanges/rt-a/dlx", {"type": "direct", "durable": True})
    put("/api/exchanges/rt-a/orders", {"type": "topic", "durable": True, "arguments": {"alternate-exchange": "unrouted"}})
    put("/api/exchanges/rt-a/audit", {"type": "headers", "durable": True, "internal": True})
    put("/api/exchanges/rt-b/b.x", {"type": "fanout", "durable": True})
    put("/api/queues/rt-a/q.orders", {"durable": True, "arguments": {
        "x-message-ttl": 30000, "x-dead-letter-exchange": "dlx", "x-max-priority": 5}})
    put("/api/queues/rt-a/q.quorum", {"durable": True, "arguments": {"x-queue-type": "quorum"}})
    put("/api/queues/rt-a/q.events", {"durable": True, "arguments": {
        "x-queue-type": "stream", "x-max-age": "7D", "x-stream-max-segment-size-bytes": 100000000}})
    put("/api/queues/rt-b/q.b", {"durable": True})
    post = lambda path, body: api(w, "POST", path, body)  # noqa: E731
    post("/api/bindings/rt-a/e/orders/q/q.orders", {"routing_key": "order.#"})
    post("/api/bindings/rt-a/e/orders/e/audit", {"routing_key": "audit"})
    post("/api/bindings/rt-a/e/dlx/q/q.orders", {"routing_key": "dead", "arguments": {"reason": "expired"}})
    post("/api/bindings/rt-a/e/audit/q/q.quorum", {"routing_key": "", "arguments": {"x-match": "all", "kind": "a"}})
    post("/api/bindings/rt-b/e/b.x/q/q.b", {"routing_key": ""})
    post("/api/bindings/rt-a/e/orders/q/q.events", {"routing_key": "#"})


def canon(d, with_vhost_metadata):
    """A definitions export as sets of comparable tuples, per section, without what either side
    adds on its own."""
    j = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731

    def policy_value(p):
        definition = p.get("definition")
        if isinstance(definition, list):  # RabbitMQ 3.10: operator policies as [key, value] pairs
            definition = dict(definition)
        return (p.get("pattern"), p.get("apply-to", "all"), j(definition), int(p.get("priority", 0)))

    def vhost(v):
        if not with_vhost_metadata:
            return v["name"]
        meta = v.get("metadata", v)
        tags = meta.get("tags", [])
        tags = tags.split(",") if isinstance(tags, str) else tags
        return (v["name"], meta.get("description", ""), j(sorted(tags)), meta.get("default_queue_type"))

    params = set()
    for p in d.get("parameters", []):
        value = p["value"]
        if p["component"] == "operator_policy":
            value = policy_value(value)
        params.add((p["vhost"], p["component"], p["name"], j(value)))
    return {
        "users": {(u["name"], u.get("password_hash"), u.get("hashing_algorithm"), j(sorted(u.get("tags") or [])),
                   j(u.get("limits") or {})) for u in d.get("users", [])},
        "vhosts": {vhost(v) for v in d.get("vhosts", [])},
        "permissions": {(p["user"], p["vhost"], p["configure"], p["write"], p["read"])
                        for p in d.get("permissions", [])},
        "topic_permissions": {(p["user"], p["vhost"], p["exchange"], p["write"], p["read"])
                              for p in d.get("topic_permissions", [])},
        "policies": {(p["vhost"], p["name"]) + policy_value(p) for p in d.get("policies", [])},
        "parameters": params,
        "global_parameters": {(g["name"], j(g["value"])) for g in d.get("global_parameters", [])
                              if g["name"] != "internal_cluster_id"},
        "queues": {(x["vhost"], x["name"], x.get("durable"), x.get("auto_delete"), j(x.get("arguments") or {}))
                   for x in d.get("queues", [])},
        "exchanges": {(x["vhost"], x["name"], x["type"], x.get("durable"), x.get("auto_delete"), x.get("internal"),
                       j(x.get("arguments") or {})) for x in d.get("exchanges", [])},
        "bindings": {(x["vhost"], x["source"], x["destination"], x["destination_type"], x["routing_key"],
                      j(x.get("arguments") or {})) for x in d.get("bindings", [])},
    }


def differences(name_a, a, name_b, b):
    """Lines naming what one side has and the other has not, per section."""
    out = []
    for section in a:
        for only, side in ((a[section] - b[section], name_a), (b[section] - a[section], name_b)):
            for item in sorted(only, key=str):
                out.append(f"  {section}: only in {side}: {item}")
    return out


def top_level_keys(name, d):
    return f"  {name}: {', '.join(sorted(d))}"


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if not os.access(RMQ_SERVER, os.X_OK):
        log(f"skipped: rabbitmq-server is not installed ({RMQ_SERVER} is missing; `make setup` installs it)")
        return 0
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="warren-roundtrip-")
    os.chmod(work, 0o755)
    running = []
    result = 1
    try:
        log("starting warren A and RabbitMQ 3.10")
        a = Warren(binary, work, "warren-a")
        running.append(a)
        rabbit = RabbitMQ(work)
        running.append(rabbit)
        populate(a.base)
        export_a = api(a.base, "GET", "/api/definitions")
        log(f"warren A exported {sum(len(v) for v in export_a.values() if isinstance(v, list))} entries")

        api(rabbit.base, "POST", "/api/definitions", json.dumps(export_a))
        export_r = api(rabbit.base, "GET", "/api/definitions")
        meta = api(rabbit.base, "GET", "/api/vhosts/rt-a")
        log(f"RabbitMQ {export_r.get('rabbitmq_version')} imported it and exported "
            f"{sum(len(v) for v in export_r.values() if isinstance(v, list))} entries")

        b = Warren(binary, work, "warren-b")
        running.append(b)
        api(b.base, "POST", "/api/definitions", json.dumps(export_r))
        export_b = api(b.base, "GET", "/api/definitions")

        for name, d in (("A", export_a), ("R", export_r), ("B", export_b)):
            with open(os.path.join(work, f"export-{name}.json"), "w") as f:
                json.dump(d, f, indent=2, sort_keys=True)
        failures = []
        # Nothing of A may be missing from what RabbitMQ holds (RabbitMQ adds only its own).
        ca_full, cr, cb = canon(export_a, True), canon(export_r, False), canon(export_b, False)
        ca = canon(export_a, False)
        a_vs_r = differences("warren A", ca, "RabbitMQ", cr)
        a_vs_b = differences("warren A", ca, "warren B", cb)
        print("top-level sections:")
        for name, d in (("warren A", export_a), ("RabbitMQ", export_r), ("warren B", export_b)):
            print(top_level_keys(name, d))
        print("warren A vs RabbitMQ (after setting aside what each adds on its own):")
        print("\n".join(a_vs_r) or "  no differences")
        print("warren A vs warren B:")
        print("\n".join(a_vs_b) or "  no differences")
        failures += [f"A vs RabbitMQ: {line.strip()}" for line in a_vs_r]
        failures += [f"A vs B: {line.strip()}" for line in a_vs_b]
        # Vhost metadata: RabbitMQ's 3.10 export omits it; its API shows what it imported.
        want = [v for v in ca_full["vhosts"] if v[0] == "rt-a"][0]
        got = ("rt-a", meta.get("description"), json.dumps(sorted(meta.get("tags", []))),
               meta.get("default_queue_type"))
        print(f"vhost rt-a metadata: warren A {want[1:]}, RabbitMQ's GET /api/vhosts/rt-a {got[1:]}; "
              f"in RabbitMQ's export: {[v for v in export_r['vhosts'] if v['name'] == 'rt-a'][0]}")
        if got != want:
            failures.append(f"vhost metadata imported by RabbitMQ: {got} != {want}")
        for f in failures:
            log(f"FAIL {f}")
        result = 1 if failures else 0
    except Exception as e:  # noqa: BLE001 - reported, and the exit code says so
        log(f"FAIL {e} (logs and exports in {work})")
    finally:
        for broker in reversed(running):
            broker.stop()
        keep = result != 0 or os.environ.get("ROUNDTRIP_KEEP") == "1"
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        log(f"{'passed' if result == 0 else 'FAILED'} in {time.monotonic() - started:.1f} s, brokers started and "
            f"stopped included" + (f"; exports and logs in {work}" if keep else ""))
    return result


if __name__ == "__main__":
    sys.exit(main())
