"""kombu (py-amqp transport) against the broker.

Covers: login with AMQPLAIN (py-amqp's own default, and what Celery deployments on older kombu
use; kombu 5.7 itself defaults to PLAIN, which is checked too) and a refused AMQPLAIN login;
``server_properties`` product/version as kombu reads them to pick QoS semantics;
``SimpleQueue`` put/get/ack; ``Producer``/``Consumer`` with a topic ``Exchange`` and bound
``Queue``; ``drain_events`` with a timeout; a fanout exchange feeding two queues; message
properties and headers surviving the round trip.

All waits go through ``drain_events(timeout=...)`` or ``SimpleQueue.get(timeout=...)``.
"""

import datetime
import decimal
import socket
import time
import urllib.parse

import amqp
import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from conftest import unique

WAIT = 5.0  # seconds allowed for any single expected event


def connect(url, **kwargs):
    conn = Connection(url, connect_timeout=WAIT, **kwargs)
    conn.connect()
    return conn


def drain_until(conn, condition, timeout=WAIT, what="condition"):
    """Call ``drain_events`` until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        try:
            conn.drain_events(timeout=min(left, 0.5))
        except socket.timeout:
            pass


def assert_nothing_more(conn, within=0.3):
    """Bounded wait to assert that no further event (delivery) arrives within ``within`` s."""
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=within)


@pytest.fixture
def conn(amqp_url):
    c = connect(amqp_url)
    yield c
    c.release()


@pytest.fixture
def cleanup(amqp_url):
    """Register kombu Queue/Exchange entities; deleted on a fresh connection afterwards."""
    entities = []
    yield entities
    with connect(amqp_url) as c:
        for entity in entities:
            ch = c.channel()
            try:
                entity.bind(ch).delete()
            except amqp.exceptions.ChannelError:
                pass
            finally:
                if ch.is_open:
                    ch.close()


def with_password(url, password):
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def test_amqplain_login(amqp_url):
    with connect(amqp_url, login_method="AMQPLAIN") as c:
        raw = c.connection  # the py-amqp Connection
        assert [a.mechanism for a in raw.authentication] == [b"AMQPLAIN"]
        assert {b"AMQPLAIN", b"PLAIN"} <= set(raw.mechanisms)
        assert c.connected
        ch = c.channel()
        assert ch.queue_declare("", exclusive=True).queue.startswith("amq.gen-")


def test_py_amqp_default_login_picks_amqplain(amqp_url):
    # Without login_method, py-amqp offers GSSAPI, EXTERNAL, AMQPLAIN, PLAIN and takes the
    # first one the broker lists: AMQPLAIN must be offered and must work.
    parts = urllib.parse.urlsplit(amqp_url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    raw = amqp.Connection(
        host=f"{parts.hostname}:{parts.port or 5672}",
        userid=urllib.parse.unquote(parts.username),
        password=urllib.parse.unquote(parts.password),
        virtual_host=vhost,
        connect_timeout=WAIT,
    )
    try:
        raw.connect()
        chosen = [a.mechanism for a in raw.authentication if a.mechanism in raw.mechanisms]
        assert chosen[0] == b"AMQPLAIN"
        assert raw.connected
    finally:
        raw.close()


def test_kombu_default_plain_login(amqp_url):
    with connect(amqp_url) as c:
        assert [a.mechanism for a in c.connection.authentication] == [b"PLAIN"]
        assert c.connected


def test_amqplain_wrong_password_is_refused(amqp_url):
    c = Connection(with_password(amqp_url, "not-the-password"), login_method="AMQPLAIN", connect_timeout=WAIT)
    try:
        # py-amqp advertises authentication_failure_close, so the broker says why.
        with pytest.raises(amqp.exceptions.AccessRefused) as err:
            c.connection.connect()
        assert err.value.reply_code == 403
        assert err.value.reply_text == (
            "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. "
            "For details see the broker logfile."
        )
    finally:
        c.release()


def test_server_properties_product_and_version(conn):
    props = conn.connection.server_properties
    assert props["product"] == "RabbitMQ"
    version = tuple(int(p) for p in props["version"].split(".")[:3])
    assert (3, 3) <= version < (4, 0)
    # kombu (and so Celery) derive QoS semantics from those two: RabbitMQ 3.3-3.x means
    # "prefetch global=True is channel-wide", so Celery will send basic.qos(global=True).
    assert conn.transport.qos_semantics_matches_spec(conn.connection) is False
    caps = props["capabilities"]
    for cap in ("publisher_confirms", "consumer_cancel_notify", "basic.nack", "per_consumer_qos"):
        assert caps.get(cap) is True, cap


def test_simple_queue_put_get_ack(conn, cleanup):
    name = unique("simple")
    sq = conn.SimpleQueue(name, serializer="json")
    cleanup.extend([sq.queue, sq.queue.exchange])
    try:
        sq.put({"n": 1, "text": "hello"})
        sq.put({"n": 2})
        msg = sq.get(timeout=WAIT)
        assert msg.payload == {"n": 1, "text": "hello"}
        assert msg.content_type == "application/json"
        assert msg.delivery_info["routing_key"] == name
        assert msg.delivery_info["exchange"] == name
        msg.ack()
        msg = sq.get(timeout=WAIT)
        assert msg.payload == {"n": 2}
        msg.ack()
        assert sq.qsize() == 0
        with pytest.raises(sq.Empty):
            sq.get(timeout=0.3)  # bounded wait: the queue stays empty
    finally:
        sq.close()
    # Both messages were acked: a new channel finds the queue empty.
    assert conn.channel().queue_declare(name, passive=True).message_count == 0


def test_producer_consumer_topic_exchange(conn, cleanup):
    ex = Exchange(unique("topic"), type="topic", durable=False)
    q = Queue(unique("orders"), exchange=ex, routing_key="order.*", durable=False)
    cleanup.extend([q, ex])
    ch = conn.channel()
    q.bind(ch).declare()  # declares the exchange, the queue and the binding
    producer = Producer(ch, exchange=ex, serializer="json")
    for key in ("order.created", "order.created.late", "invoice.created", "order.paid"):
        producer.publish({"key": key}, routing_key=key)

    got = []

    def on_message(body, message):
        got.append((body, message.delivery_info["routing_key"]))
        message.ack()

    with Consumer(ch, queues=[q], callbacks=[on_message], accept=["json"]):
        drain_until(conn, lambda: len(got) >= 2, what="two topic deliveries")
        assert_nothing_more(conn)
    assert got == [({"key": "order.created"}, "order.created"), ({"key": "order.paid"}, "order.paid")]


def test_drain_events_times_out_when_idle(conn, cleanup):
    q = Queue(unique("idle"), durable=False)
    cleanup.append(q)
    ch = conn.channel()
    q.bind(ch).declare()
    got = []
    with Consumer(ch, queues=[q], callbacks=[lambda b, m: (got.append(b), m.ack())]):
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.3)  # bounded wait: nothing is published yet
        assert 0.25 <= time.monotonic() - started < 2.0
        assert got == []
        # The connection is intact after the timeout: a later message is delivered.
        Producer(ch).publish(b"late", routing_key=q.name, exchange="")
        drain_until(conn, lambda: got, what="delivery after a drain_events timeout")
    assert got == [b"late"]


def test_fanout_exchange_to_two_queues(conn, cleanup):
    ex = Exchange(unique("fanout"), type="fanout", durable=False)
    q1 = Queue(unique("fan1"), exchange=ex, durable=False)
    q2 = Queue(unique("fan2"), exchange=ex, durable=False)
    cleanup.extend([q1, q2, ex])
    ch = conn.channel()
    q1.bind(ch).declare()
    q2.bind(ch).declare()
    Producer(ch, exchange=ex).publish(b"to everyone", routing_key="ignored", content_type="application/data")

    got = []
    with Consumer(ch, queues=[q1, q2], callbacks=[lambda b, m: (got.append((b, m)), m.ack())]):
        drain_until(conn, lambda: len(got) >= 2, what="one delivery per bound queue")
        assert_nothing_more(conn)
    assert [b for b, _ in got] == [b"to everyone", b"to everyone"]
    assert len({m.delivery_info["consumer_tag"] for _, m in got}) == 2  # one per queue
    assert all(m.delivery_info["routing_key"] == "ignored" for _, m in got)
    assert all(m.delivery_info["exchange"] == ex.name for _, m in got)


def test_message_properties_and_headers_round_trip(conn, cleanup):
    user = conn.userid  # user_id must equal the login user or the broker refuses it
    q = Queue(unique("props"), durable=False)
    cleanup.append(q)
    ch = conn.channel()
    q.bind(ch).declare()
    headers = {
        "str": "value",
        "int": 42,
        "negative": -7,
        "big": 2**40,
        "float": 1.5,
        "bool": True,
        "decimal": decimal.Decimal("12.34"),
        "when": datetime.datetime(2024, 5, 6, 7, 8, 9),
        "list": [1, "two", False],
        "nested": {"a": "b", "n": 3},
        "void": None,
    }
    Producer(ch).publish(
        "payload é",
        exchange="",
        routing_key=q.name,
        serializer=None,
        content_type="text/plain",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=3,
        correlation_id="corr-1",
        reply_to="reply-q",
        expiration=60,  # kombu takes seconds and sends "60000" (ms)
        message_id="msg-1",
        timestamp=1700000000,
        type="kind",
        user_id=user,
        app_id="interop",
    )

    got = []
    with Consumer(ch, queues=[q], callbacks=[lambda b, m: (got.append(m), m.ack())], accept=["text/plain"]):
        drain_until(conn, lambda: got, what="the delivery")
    m = got[0]
    assert m.body == "payload é"  # py-amqp decodes the body by its content_encoding
    assert m.content_type == "text/plain"
    assert m.content_encoding == "utf-8"
    assert m.headers == headers
    p = m.properties
    assert p["delivery_mode"] == 2
    assert p["priority"] == 3
    assert p["correlation_id"] == "corr-1"
    assert p["reply_to"] == "reply-q"
    assert p["expiration"] == "60000"
    assert p["message_id"] == "msg-1"
    assert p["timestamp"] == 1700000000  # seconds since the epoch, unchanged
    assert p["type"] == "kind"
    assert p["user_id"] == user
    assert p["app_id"] == "interop"
