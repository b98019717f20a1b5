"""pika (BlockingConnection) against the broker.

Covers: exchange/queue declare, bind, publish, consume and ack; publisher confirms
(``confirm_delivery``); ``mandatory`` unroutable messages (``UnroutableError`` with confirms,
the on-return callback without); topic routing with ``*`` and ``#``; ``basic.qos`` prefetch;
``basic.get``/ack; ``basic.nack`` with and without requeue; exclusive queues seen from a second
connection; heartbeat negotiation (heartbeat=2) over a few idle seconds.

Waits are bounded: ``wait_for`` pumps the connection until a condition holds or a deadline
passes, so a misbehaving broker fails the test instead of hanging it.
"""

import time

import pika
import pika.exceptions
import pytest

from conftest import unique

WAIT = 5.0  # seconds allowed for any single expected event


def wait_for(conn, condition, timeout=WAIT, what="condition"):
    """Pump ``conn`` until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        conn.process_data_events(time_limit=min(left, 0.1))


@pytest.fixture
def params(amqp_url):
    p = pika.URLParameters(amqp_url)
    p.socket_timeout = WAIT
    p.blocked_connection_timeout = WAIT
    p.connection_attempts = 1
    return p


@pytest.fixture
def conn(params):
    c = pika.BlockingConnection(params)
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def cleanup(params):
    """Register queues/exchanges; they are deleted on a fresh connection after the test."""
    queues, exchanges = [], []
    yield queues, exchanges
    c = pika.BlockingConnection(params)
    try:
        for kind, name in [("queue", q) for q in queues] + [("exchange", e) for e in exchanges]:
            ch = c.channel()
            try:
                ch.queue_delete(name) if kind == "queue" else ch.exchange_delete(name)
                ch.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass  # e.g. an exclusive queue still owned by a failed test's connection
    finally:
        c.close()


def declare_queue(ch, cleanup, prefix, **kwargs):
    name = unique(prefix)
    ok = ch.queue_declare(name, **kwargs)
    assert ok.method.queue == name
    cleanup[0].append(name)
    return name


def declare_exchange(ch, cleanup, prefix, exchange_type):
    name = unique(prefix)
    ch.exchange_declare(name, exchange_type=exchange_type)
    cleanup[1].append(name)
    return name


def ready_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def test_declare_bind_publish_consume_ack(conn, cleanup):
    ch = conn.channel()
    ex = declare_exchange(ch, cleanup, "direct", "direct")
    q = declare_queue(ch, cleanup, "q")
    ch.queue_bind(q, ex, routing_key="rk")
    assert ready_count(ch, q) == 0

    props = pika.BasicProperties(content_type="text/plain", correlation_id="c-1", delivery_mode=2)
    ch.basic_publish(ex, "rk", b"hello pika", props)

    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append((m, p, b)))
    assert tag.startswith("ctag")  # pika generates its own consumer tags
    wait_for(conn, lambda: got, what="basic.deliver")
    method, props, body = got[0]
    assert body == b"hello pika"
    assert method.exchange == ex
    assert method.routing_key == "rk"
    assert method.consumer_tag == tag
    assert method.redelivered is False
    assert method.delivery_tag == 1
    assert props.content_type == "text/plain"
    assert props.correlation_id == "c-1"
    assert props.delivery_mode == 2
    ch.basic_ack(method.delivery_tag)
    ch.basic_cancel(tag)
    # Closing the channel would requeue the message if the ack had been lost.
    ch.close()
    assert ready_count(conn.channel(), q) == 0


def test_publisher_confirms(conn, cleanup):
    ch = conn.channel()
    q = declare_queue(ch, cleanup, "confirm")
    ch.confirm_delivery()
    for i in range(5):
        # With confirms on, pika's basic_publish blocks until basic.ack and returns None
        # (a basic.nack raises NackError).
        assert ch.basic_publish("", q, f"m{i}".encode()) is None
    # Unroutable without mandatory is acked too (and silently dropped).
    assert ch.basic_publish("", unique("nowhere"), b"dropped") is None
    assert ready_count(ch, q) == 5


def test_mandatory_unroutable_with_confirms_raises_unroutable_error(conn, cleanup):
    ch = conn.channel()
    ex = declare_exchange(ch, cleanup, "unroutable", "direct")
    ch.confirm_delivery()
    props = pika.BasicProperties(message_id="m-1", headers={"k": "v"})
    with pytest.raises(pika.exceptions.UnroutableError) as err:
        ch.basic_publish(ex, "no.binding", b"bounce", props, mandatory=True)
    assert len(err.value.messages) == 1
    returned = err.value.messages[0]
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == ex
    assert returned.method.routing_key == "no.binding"
    assert returned.properties.message_id == "m-1"
    assert returned.properties.headers == {"k": "v"}
    assert returned.body == b"bounce"
    # The channel stays usable and routable publishes are confirmed as usual.
    q = declare_queue(ch, cleanup, "after-return")
    assert ch.basic_publish("", q, b"ok", mandatory=True) is None


def test_mandatory_unroutable_without_confirms_calls_return_callback(conn, cleanup):
    ch = conn.channel()
    ex = declare_exchange(ch, cleanup, "ret", "direct")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    ch.basic_publish(ex, "lost", b"r1", pika.BasicProperties(type="t1"), mandatory=True)
    wait_for(conn, lambda: returned, what="basic.return")
    method, props, body = returned[0]
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert (method.exchange, method.routing_key) == (ex, "lost")
    assert props.type == "t1"
    assert body == b"r1"


def test_topic_exchange_routing(conn, cleanup):
    ch = conn.channel()
    ex = declare_exchange(ch, cleanup, "topic", "topic")
    star = declare_queue(ch, cleanup, "star")
    hash_ = declare_queue(ch, cleanup, "hash")
    ch.queue_bind(star, ex, routing_key="stock.*.nyse")
    ch.queue_bind(hash_, ex, routing_key="stock.#")
    ch.confirm_delivery()  # each publish is routed and enqueued before basic_publish returns
    keys = ["stock.ibm.nyse", "stock.nyse", "stock.ibm.nyse.x", "stock", "bond.ibm.nyse", "stock..nyse"]
    for k in keys:
        ch.basic_publish(ex, k, k.encode())

    def drain(q):
        seen = []
        while True:
            method, _props, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                return seen
            assert body == method.routing_key.encode()
            seen.append(method.routing_key)

    assert drain(star) == ["stock.ibm.nyse", "stock..nyse"]
    assert drain(hash_) == ["stock.ibm.nyse", "stock.nyse", "stock.ibm.nyse.x", "stock", "stock..nyse"]


def test_prefetch_limits_unacked_deliveries(conn, cleanup):
    ch = conn.channel()
    q = declare_queue(ch, cleanup, "prefetch")
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m, b)))
    wait_for(conn, lambda: len(got) >= 2, what="first two deliveries")
    # Bounded wait to assert that nothing more arrives while two are unacked.
    conn.process_data_events(time_limit=0.3)
    assert [b for _, b in got] == [b"0", b"1"]

    ch.basic_ack(got[0][0].delivery_tag)
    wait_for(conn, lambda: len(got) >= 3, what="third delivery after one ack")
    # Bounded wait to assert that one ack released exactly one more delivery.
    conn.process_data_events(time_limit=0.3)
    assert [b for _, b in got] == [b"0", b"1", b"2"]

    ch.basic_ack(got[2][0].delivery_tag, multiple=True)  # acks tags 2 and 3
    wait_for(conn, lambda: len(got) == 5, what="remaining deliveries")
    assert [b for _, b in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert [m.delivery_tag for m, _ in got] == [1, 2, 3, 4, 5]
    ch.basic_ack(0, multiple=True)
    ch.close()
    assert ready_count(conn.channel(), q) == 0


def test_basic_get_and_ack(conn, cleanup):
    ch = conn.channel()
    q = declare_queue(ch, cleanup, "get")
    ch.confirm_delivery()
    ch.basic_publish("", q, b"first", pika.BasicProperties(app_id="interop"))
    ch.basic_publish("", q, b"second")

    method, props, body = ch.basic_get(q)
    assert isinstance(method, pika.spec.Basic.GetOk)
    assert (body, props.app_id) == (b"first", "interop")
    assert method.message_count == 1  # ready messages left after this one
    assert (method.delivery_tag, method.redelivered, method.exchange, method.routing_key) == (1, False, "", q)
    ch.basic_ack(method.delivery_tag)

    method, _props, body = ch.basic_get(q)
    assert (body, method.message_count, method.delivery_tag) == (b"second", 0, 2)
    ch.basic_ack(method.delivery_tag)

    assert ch.basic_get(q) == (None, None, None)  # basic.get-empty
    ch.close()
    assert ready_count(conn.channel(), q) == 0  # nothing was requeued by the close


def test_nack_requeue_then_discard(conn, cleanup):
    ch = conn.channel()
    q = declare_queue(ch, cleanup, "nack")
    ch.confirm_delivery()
    ch.basic_publish("", q, b"again")

    method, _p, body = ch.basic_get(q)
    assert (body, method.redelivered) == (b"again", False)
    ch.basic_nack(method.delivery_tag, requeue=True)

    method, _p, body = ch.basic_get(q)
    assert (body, method.redelivered) == (b"again", True)
    ch.basic_nack(method.delivery_tag, requeue=False)  # no DLX: dropped
    assert ch.basic_get(q) == (None, None, None)
    assert ready_count(ch, q) == 0


def test_exclusive_queue_is_locked_to_its_connection(conn, params, cleanup, vhost):
    ch = conn.channel()
    q = declare_queue(ch, cleanup, "excl", exclusive=True)
    other = pika.BlockingConnection(params)
    try:
        och = other.channel()
        # Other connections may publish to an exclusive queue...
        och.confirm_delivery()
        och.basic_publish("", q, b"from other")
        method, _p, body = ch.basic_get(q, auto_ack=True)
        assert body == b"from other"
        # ...but not use it.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            och.queue_declare(q, passive=True)
        assert err.value.reply_code == 405
        assert err.value.reply_text == (
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '{vhost}'. "
            "It could be originally declared on another connection or the exclusive property value "
            "does not match that of the original declaration."
        )
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            other.channel().basic_get(q)
        assert err.value.reply_code == 405

        # Closing the owning connection deletes the queue (before close-ok).
        conn.close()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            other.channel().queue_declare(q, passive=True)
        assert err.value.reply_code == 404
        assert err.value.reply_text == f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'"
    finally:
        other.close()


def test_heartbeat_two_seconds_keeps_idle_connection_alive(params):
    params.heartbeat = 2
    c = pika.BlockingConnection(params)
    try:
        impl = c._impl  # pika keeps the negotiated values on the connection implementation
        assert impl.params.heartbeat == 2
        checker = impl._heartbeat_checker
        assert checker is not None
        start = checker._heartbeat_frames_received
        # Idle for 5 s (2.5x the timeout) while pika services heartbeats. This duration is the
        # subject of the test, not a synchronisation wait: a broker that ignored our heartbeats
        # or used the wrong timeout would drop the connection, and with timeout 2 s the broker
        # must send its own heartbeat frames about every second.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            c.process_data_events(time_limit=0.25)
        assert c.is_open
        assert checker._heartbeat_frames_received - start >= 2
        # The connection still works.
        ch = c.channel()
        ok = ch.queue_declare("", exclusive=True)
        assert ok.method.queue.startswith("amq.gen-")
    finally:
        if c.is_open:
            c.close()
