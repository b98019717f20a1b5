"""rabbitmqadmin (the script RabbitMQ 3.10 ships, from Debian's rabbitmq-server package) driving
the broker's management API: declare/list/delete queues, exchanges and bindings; publish, get
and purge; users, vhosts, permissions, policies and vhost limits; connections, channels,
consumers, nodes and the overview; definitions export and import. Each command's output is
checked (``-f raw_json`` where the test reads fields, the default table where it reads what
an operator sees).

The management API is named by MGMT_URL (``http://127.0.0.1:PORT``; interop/with-warren.sh
exports it). The script is looked up as $RABBITMQADMIN, then ``rabbitmqadmin`` on the PATH,
then inside the installed rabbitmq_management plugin (a directory or an .ez archive). The
tests skip, saying why, only when MGMT_URL is not set or no rabbitmqadmin is installed
(``make setup`` installs rabbitmq-server, which brings it).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import zipfile

import pika
import pytest

from conftest import unique

# Seconds allowed for any single expected change (RabbitMQ itself updates listed statistics
# every 5 s, so the tests also pass against it).
WAIT = 12.0


def find_rabbitmqadmin(tmp_dir):
    """The path of rabbitmqadmin, or None."""
    explicit = os.environ.get("RABBITMQADMIN")
    if explicit:
        return explicit
    on_path = shutil.which("rabbitmqadmin")
    if on_path:
        return on_path
    plugins = "/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins"
    for path in sorted(glob.glob(f"{plugins}/rabbitmq_management-*/priv/www/cli/rabbitmqadmin")):
        return path
    for ez in sorted(glob.glob(f"{plugins}/rabbitmq_management-*.ez")):
        with zipfile.ZipFile(ez) as z:
            for name in z.namelist():
                if name.endswith("/priv/www/cli/rabbitmqadmin"):
                    target = os.path.join(tmp_dir, "rabbitmqadmin")
                    with open(target, "wb") as f:
                        f.write(z.read(name))
                    return target
    return None


@pytest.fixture(scope="module")
def admin(tmp_path_factory, amqp_url):
    """run(*args) -> stdout of ``rabbitmqadmin <args>`` against MGMT_URL (fails on a non-zero exit)."""
    mgmt = os.environ.get("MGMT_URL")
    if not mgmt:
        pytest.skip("MGMT_URL is not set (interop/with-warren.sh sets it to the management API)")
    script = find_rabbitmqadmin(str(tmp_path_factory.mktemp("rabbitmqadmin")))
    if script is None:
        pytest.skip("rabbitmqadmin is not installed (make setup installs rabbitmq-server, which has it)")
    url = urllib.parse.urlsplit(mgmt)
    creds = urllib.parse.urlsplit(amqp_url)
    base = [sys.executable, script, "-H", url.hostname, "-P", str(url.port),
            "-u", urllib.parse.unquote(creds.username or "guest"),
            "-p", urllib.parse.unquote(creds.password or "guest")]

    def run(*args, ok=True):
        p = subprocess.run(base + list(args), capture_output=True, text=True, timeout=30)
        if ok and p.returncode != 0:
            pytest.fail(f"rabbitmqadmin {' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p if not ok else p.stdout

    return run


def listing(admin, what, *args):
    """``list <what>`` as parsed JSON."""
    return json.loads(admin("-f", "raw_json", *args, "list", what))


def eventually(check, what):
    """Poll ``check()`` until it returns a true value; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT}s waiting for {what}")
        time.sleep(0.05)


def named(items, name):
    return [i for i in items if i.get("name") == name]


@pytest.mark.timeout(90)
def test_queue_exchange_binding_publish_get_purge_delete(admin):
    q, x = unique("adm-q"), unique("adm-x")
    assert admin("declare", "exchange", f"name={x}", "type=topic").strip() == "exchange declared"
    assert admin("declare", "queue", f"name={q}", "durable=false").strip() == "queue declared"
    assert admin("declare", "binding", f"source={x}", f"destination={q}", "routing_key=k.#").strip() == \
        "binding declared"
    try:
        [queue] = named(listing(admin, "queues"), q)
        assert (queue["durable"], queue["auto_delete"], queue["vhost"]) == (False, False, "/")
        [exchange] = named(listing(admin, "exchanges"), x)
        assert (exchange["type"], exchange["durable"], exchange["internal"]) == ("topic", True, False)
        bindings = [b for b in listing(admin, "bindings") if b["source"] == x]
        assert [(b["destination"], b["destination_type"], b["routing_key"]) for b in bindings] == \
            [(q, "queue", "k.#")]
        table = admin("list", "bindings", "source", "destination", "routing_key")
        assert any([c.strip() for c in row.split("|")[1:4]] == [x, q, "k.#"] for row in table.splitlines())

        assert admin("publish", f"exchange={x}", "routing_key=k.a", "payload=first").strip() == "Message published"
        assert admin("publish", f"routing_key={q}", "payload=second").strip() == "Message published"
        assert admin("publish", f"exchange={x}", "routing_key=nowhere", "payload=lost").strip() == \
            "Message published but NOT routed"
        eventually(lambda: named(listing(admin, "queues"), q)[0].get("messages") == 2, "2 messages in the queue")
        # The default table: the queue's row shows its depth.
        rows = [[c.strip() for c in r.split("|")[1:-1]] for r in admin("list", "queues").splitlines() if "|" in r]
        assert rows[0] == ["name", "messages"] and [q, "2"] in rows
        eventually(lambda: named(listing(admin, "vhosts"), "/")[0].get("messages", 0) >= 2, "the vhost's count")

        got = json.loads(admin("-f", "raw_json", "get", f"queue={q}", "count=2", "ackmode=ack_requeue_true"))
        assert [(m["payload"], m["routing_key"], m["exchange"], m["payload_encoding"]) for m in got] == \
            [("first", "k.a", x, "string"), ("second", q, "", "string")]
        assert [m["message_count"] for m in got] == [1, 0]
        # Requeued: still 2, and now redelivered; ack_requeue_false takes one away.
        got = json.loads(admin("-f", "raw_json", "get", f"queue={q}", "ackmode=ack_requeue_false"))
        assert [(m["payload"], m["redelivered"]) for m in got] == [("first", True)]
        eventually(lambda: named(listing(admin, "queues"), q)[0].get("messages") == 1, "1 message after the get")

        assert admin("purge", "queue", f"name={q}").strip() == "queue purged"
        eventually(lambda: named(listing(admin, "queues"), q)[0].get("messages") == 0, "an empty queue after purge")
        assert json.loads(admin("-f", "raw_json", "get", f"queue={q}")) == []

        [binding] = [b for b in listing(admin, "bindings") if b["source"] == x]
        assert admin("delete", "binding", f"source={x}", "destination_type=queue", f"destination={q}",
                     f"properties_key={binding['properties_key']}").strip() == "binding deleted"
        assert [b for b in listing(admin, "bindings") if b["source"] == x] == []
    finally:
        admin("delete", "queue", f"name={q}", ok=False)
        admin("delete", "exchange", f"name={x}", ok=False)
    assert named(listing(admin, "queues"), q) == [] and named(listing(admin, "exchanges"), x) == []
    # Deleting what is gone: rabbitmqadmin reports the 404 and exits 1.
    gone = admin("delete", "queue", f"name={q}", ok=False)
    assert gone.returncode == 1 and "Not found: /api/queues/%2F/" in gone.stderr


@pytest.mark.timeout(90)
def test_users_vhosts_permissions_policies_and_limits(admin):
    user, vh = unique("adm-user"), unique("adm-vhost")
    assert admin("declare", "vhost", f"name={vh}").strip() == "vhost declared"
    try:
        assert admin("declare", "user", f"name={user}", "password=s3cret", "tags=monitoring").strip() == \
            "user declared"
        assert admin("declare", "permission", f"vhost={vh}", f"user={user}", "configure=^c", "write=^w",
                     "read=.*").strip() == "permission declared"
        assert admin("-V", vh, "declare", "policy", "name=cap", "pattern=^q", "definition={\"max-length\": 5}",
                     "apply-to=queues", "priority=3").strip() == "policy declared"
        assert admin("declare", "vhost_limit", f"vhost={vh}", "name=max-queues", "value=7").strip() == \
            "vhost_limit declared"

        # Sorted by the server (-S / -R), as RabbitMQ sorts every list.
        for what in ("users", "vhosts", "permissions"):
            key = "user" if what == "permissions" else "name"
            names = [i[key] for i in json.loads(admin("-f", "raw_json", "-S", key, "-R", "list", what))]
            assert len(names) > 1 and names == sorted(names, reverse=True), (what, names)
        [u] = named(listing(admin, "users"), user)
        assert (u["tags"], u["hashing_algorithm"]) == (["monitoring"], "rabbit_password_hashing_sha256")
        assert named(listing(admin, "vhosts"), vh)[0].get("messages", 0) == 0
        perms = [p for p in listing(admin, "permissions") if p["user"] == user]
        assert perms == [{"user": user, "vhost": vh, "configure": "^c", "write": "^w", "read": ".*"}]
        [p] = [p for p in listing(admin, "policies") if p["vhost"] == vh]
        assert (p["name"], p["pattern"], p["apply-to"], p["definition"], p["priority"]) == \
            ("cap", "^q", "queues", {"max-length": 5}, 3)
        assert [lim["value"] for lim in listing(admin, "vhost_limits") if lim["vhost"] == vh] == [{"max-queues": 7}]
        assert [p["value"] for p in listing(admin, "parameters") if p["vhost"] == vh] == [{"max-queues": 7}]
        # The table shows a policy's definition as JSON.
        assert '{"max-length": 5}' in admin("list", "policies")

        # An unknown parameter component is refused as RabbitMQ refuses it.
        bad = admin("declare", "parameter", "component=federation-upstream", "name=up",
                    "value={\"uri\": \"amqp://\"}", ok=False)
        assert bad.returncode == 1 and "component federation-upstream not found" in bad.stderr

        assert admin("delete", "vhost_limit", f"vhost={vh}", "name=max-queues").strip() == "vhost_limit deleted"
        assert admin("-V", vh, "delete", "policy", "name=cap").strip() == "policy deleted"
        assert admin("delete", "permission", f"vhost={vh}", f"user={user}").strip() == "permission deleted"
        assert [p for p in listing(admin, "permissions") if p["user"] == user] == []
        assert [p for p in listing(admin, "policies") if p["vhost"] == vh] == []
        assert admin("delete", "user", f"name={user}").strip() == "user deleted"
        assert named(listing(admin, "users"), user) == []
    finally:
        admin("delete", "user", f"name={user}", ok=False)
        admin("delete", "vhost", f"name={vh}", ok=False)
    assert named(listing(admin, "vhosts"), vh) == []


@pytest.mark.timeout(90)
def test_connections_channels_consumers_nodes_overview(admin, amqp_url):
    q = unique("adm-consumed")
    params = pika.URLParameters(amqp_url)
    label = unique("adm-conn")
    params.client_properties = {"connection_name": label}
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.queue_declare(q, exclusive=True)
        ch.basic_qos(prefetch_count=7)
        tag = ch.basic_consume(q, lambda *a: None)
        consumers = eventually(lambda: [c for c in listing(admin, "consumers") if c["consumer_tag"] == tag],
                               "the consumer to be listed")
        assert consumers[0]["queue"]["name"] == q and consumers[0]["prefetch_count"] == 7
        assert consumers[0]["ack_required"] is True
        mine = eventually(lambda: [c for c in listing(admin, "connections")
                                   if c["client_properties"].get("connection_name") == label
                                   and c.get("channels") == 1], "the connection with its channel")
        assert len(mine) == 1 and mine[0]["user"] == "guest"
        assert mine[0]["protocol"] == "AMQP 0-9-1"
        name = mine[0]["name"]
        channels = eventually(lambda: [c for c in listing(admin, "channels")
                                       if c["connection_details"]["name"] == name and "consumer_count" in c],
                              "the channel")
        assert [(c["number"], c["consumer_count"], c["prefetch_count"]) for c in channels] == [(1, 1, 7)]
        table = admin("list", "connections")
        assert any(name in row and "guest" in row for row in table.splitlines())

        [node] = listing(admin, "nodes")
        assert node["running"] is True and node["mem_used"] > 0
        [overview] = json.loads(admin("-f", "raw_json", "show", "overview"))
        assert overview["object_totals"]["queues"] >= 1 and overview["object_totals"]["connections"] >= 1
        shown = admin("show", "overview")
        assert "rabbitmq_version" in shown and overview["rabbitmq_version"] in shown

        assert admin("close", "connection", f"name={name}").strip() == "connection closed"
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
        assert (closed.value.reply_code, closed.value.reply_text) == \
            (320, "CONNECTION_FORCED - Closed via management plugin")
        eventually(lambda: not [c for c in listing(admin, "connections") if c["name"] == name],
                   "the connection to leave the list")
    finally:
        if conn.is_open:
            conn.close()


@pytest.mark.timeout(90)
def test_definitions_export_and_import(admin, tmp_path):
    vh, user, q, x = unique("adm-defs"), unique("adm-defs-user"), unique("adm-defs-q"), unique("adm-defs-x")
    admin("declare", "vhost", f"name={vh}")
    try:
        admin("declare", "user", f"name={user}", "password=pw", "tags=management")
        admin("declare", "permission", f"vhost={vh}", f"user={user}", "configure=.*", "write=.*", "read=.*")
        admin("-V", vh, "declare", "queue", f"name={q}", "durable=true", "arguments={\"x-max-length\": 9}")
        admin("-V", vh, "declare", "exchange", f"name={x}", "type=fanout")
        admin("-V", vh, "declare", "binding", f"source={x}", f"destination={q}")
        admin("-V", vh, "declare", "policy", "name=ttl", "pattern=.*", "definition={\"message-ttl\": 1000}")

        everything, one = tmp_path / "all.json", tmp_path / "one.json"
        out = admin("export", str(everything))
        assert out.strip() == f'Exported definitions for 127.0.0.1 to "{everything}"'
        d = json.loads(everything.read_text())
        assert {"rabbit_version", "users", "vhosts", "permissions", "policies", "queues", "exchanges",
                "bindings", "parameters", "global_parameters"} <= d.keys()
        assert [(e["name"], e["durable"], e["arguments"]) for e in d["queues"] if e["vhost"] == vh] == \
            [(q, True, {"x-max-length": 9})]
        assert [e["type"] for e in d["exchanges"] if e["vhost"] == vh] == ["fanout"]
        assert [(b["source"], b["destination"]) for b in d["bindings"] if b["vhost"] == vh] == [(x, q)]
        assert [u["tags"] for u in d["users"] if u["name"] == user] == [["management"]]

        admin("-V", vh, "export", str(one))
        per_vhost = json.loads(one.read_text())
        assert not {"users", "vhosts", "permissions"} & per_vhost.keys()
        assert [e["name"] for e in per_vhost["queues"]] == [q] and "vhost" not in per_vhost["queues"][0]
        assert [p["name"] for p in per_vhost["policies"]] == ["ttl"]

        # Remove it all, import the whole export back, and everything returns.
        admin("delete", "vhost", f"name={vh}")
        admin("delete", "user", f"name={user}")
        assert named(listing(admin, "vhosts"), vh) == [] and named(listing(admin, "users"), user) == []
        assert admin("import", str(everything)).startswith("Uploaded definitions from")
        assert named(listing(admin, "vhosts"), vh) and named(listing(admin, "users"), user)
        [back] = named(listing(admin, "queues", "-V", vh), q)
        assert back["arguments"] == {"x-max-length": 9} and back["durable"] is True
        assert [b["destination"] for b in listing(admin, "bindings", "-V", vh) if b["source"] == x] == [q]
        assert [p["name"] for p in listing(admin, "policies") if p["vhost"] == vh] == ["ttl"]
        assert [p["read"] for p in listing(admin, "permissions") if p["user"] == user] == [".*"]

        # The per-vhost file imports into that vhost after its queue is gone.
        admin("-V", vh, "delete", "queue", f"name={q}")
        admin("-V", vh, "import", str(one))
        assert named(listing(admin, "queues", "-V", vh), q)
    finally:
        admin("delete", "vhost", f"name={vh}", ok=False)
        admin("delete", "user", f"name={user}", ok=False)
