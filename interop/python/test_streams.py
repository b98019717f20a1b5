"""Streams from Python, as on RabbitMQ: pika over AMQP 0-9-1 (x-queue-type=stream, basic.qos,
x-stream-offset) and rstream, RabbitMQ's Python client for the native stream protocol (port
5552; STREAM_ADDR names Warren's stream listener). Both faces share one log: what one publishes
the other reads, properties intact.
"""

import asyncio
import os
import time

import pika
import pytest
from rstream import (
    AMQPMessage,
    Consumer,
    ConsumerOffsetSpecification,
    OffsetType,
    Producer,
    amqp_decoder,
)
from rstream import Properties as AmqpProperties

from conftest import unique

WAIT = 20


@pytest.fixture(scope="session")
def stream_addr():
    addr = os.environ.get("STREAM_ADDR")
    if not addr:
        pytest.fail("STREAM_ADDR is not set (host:port of the broker's stream listener)")
    host, port = addr.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def channel(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    yield ch
    if conn.is_open:
        conn.close()


def declare_stream(ch, prefix, **extra):
    q = unique(prefix)
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "stream", **extra})
    return q


def consume_n(ch, q, n, offset="first", prefetch=100):
    """The first n deliveries of a fresh consumer at `offset`, acked."""
    ch.basic_qos(prefetch_count=prefetch)
    got = []
    for method, props, body in ch.consume(q, arguments={"x-stream-offset": offset}, inactivity_timeout=WAIT):
        assert method is not None, f"only {len(got)} of {n} deliveries arrived"
        got.append((props, body))
        ch.basic_ack(method.delivery_tag)
        if len(got) == n:
            break
    ch.cancel()
    return got


def test_pika_publishes_and_replays_a_stream_with_offsets(channel):
    q = declare_stream(channel, "stream", **{"x-max-age": "7D"})
    channel.confirm_delivery()
    props = pika.BasicProperties(
        content_type="application/json", correlation_id="c-1", headers={"n": 7, "s": "text"}, delivery_mode=2
    )
    for i in range(5):
        channel.basic_publish("", q, f"m{i}".encode(), props)
    got = consume_n(channel, q, 5)
    assert [b for _, b in got] == [f"m{i}".encode() for i in range(5)]
    assert [p.headers["x-stream-offset"] for p, _ in got] == [0, 1, 2, 3, 4]
    p = got[0][0]
    assert (p.content_type, p.correlation_id, p.delivery_mode) == ("application/json", "c-1", 2)
    assert (p.headers["n"], p.headers["s"]) == (7, "text")
    # From an offset: what lies below it is skipped.
    assert [p.headers["x-stream-offset"] for p, _ in consume_n(channel, q, 2, offset=3)] == [3, 4]
    channel.queue_delete(q)


def test_pika_consume_without_prefetch_is_refused(channel):
    q = declare_stream(channel, "stream-noqos")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        channel.basic_consume(q, lambda *a: None)
    assert e.value.reply_code == 406
    assert "consumer prefetch count is not set" in e.value.reply_text
    conn = channel.connection
    conn.channel().queue_delete(q)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT))


async def read(host, port, stream, n, offset=None, name=None):
    """The first n messages of `stream` from `offset` (default first), with their offsets."""
    got = []
    done = asyncio.Event()

    async def on_message(msg, ctx):
        if len(got) < n:
            got.append((ctx.offset, msg))
        if len(got) == n:
            done.set()

    async with Consumer(host, port, username="guest", password="guest") as consumer:
        spec = offset or ConsumerOffsetSpecification(OffsetType.FIRST, None)
        await consumer.subscribe(stream, on_message, decoder=amqp_decoder, offset_specification=spec, subscriber_name=name)
        task = asyncio.create_task(consumer.run())
        await done.wait()
        task.cancel()
    return got


async def create_and_fill(host, port, stream, prefix, n):
    """Create `stream` and publish `prefix`0 .. `prefix`n-1 to it, each confirmed."""
    async with Producer(host, port, username="guest", password="guest") as producer:
        await producer.create_stream(stream)
        for i in range(n):
            await producer.send_wait(stream, AMQPMessage(body=f"{prefix}{i}".encode()))


def test_rstream_publishes_with_confirms_and_reads_from_each_offset(stream_addr):
    host, port = stream_addr
    stream = unique("rstream")

    async def go():
        await create_and_fill(host, port, stream, "r", 10)
        got = await read(host, port, stream, 10)
        assert [o for o, _ in got] == list(range(10))
        assert [bytes(m.body) for _, m in got] == [f"r{i}".encode() for i in range(10)]
        tail = await read(host, port, stream, 3, ConsumerOffsetSpecification(OffsetType.OFFSET, 7))
        assert [o for o, _ in tail] == [7, 8, 9]
        async with Producer(host, port, username="guest", password="guest") as producer:
            await producer.delete_stream(stream)

    run(go())


def test_pika_publishes_and_rstream_reads_the_same_properties(channel, stream_addr):
    host, port = stream_addr
    q = declare_stream(channel, "both-faces")
    channel.confirm_delivery()
    props = pika.BasicProperties(
        content_type="text/plain", message_id="id-9", correlation_id="corr", headers={"colour": "red", "n": 3}
    )
    channel.basic_publish("", q, b"from pika", props)

    [(offset, msg)] = run(read(host, port, q, 1))
    assert offset == 0
    assert bytes(msg.body) == b"from pika"
    p = msg.properties
    assert p.content_type in ("text/plain", b"text/plain")
    assert p.message_id in ("id-9", b"id-9")
    assert p.correlation_id in ("corr", b"corr")
    app = {k.decode() if isinstance(k, bytes) else k: v for k, v in (msg.application_properties or {}).items()}
    assert app["colour"] in ("red", b"red")
    assert app["n"] == 3
    channel.queue_delete(q)


def test_rstream_publishes_and_pika_reads_the_same_message(channel, stream_addr):
    host, port = stream_addr
    q = declare_stream(channel, "to-pika")

    async def go():
        async with Producer(host, port, username="guest", password="guest") as producer:
            msg = AMQPMessage(
                body=b"from rstream",
                properties=AmqpProperties(content_type="text/plain", correlation_id="k-1"),
                application_properties={"tenant": "acme"},
            )
            await producer.send_wait(q, msg)

    run(go())
    [(props, body)] = consume_n(channel, q, 1)
    assert body == b"from rstream"
    assert (props.content_type, props.correlation_id) == ("text/plain", "k-1")
    assert props.headers["tenant"] == "acme"
    assert props.headers["x-stream-offset"] == 0
    channel.queue_delete(q)


def test_rstream_tracks_a_consumers_offset_on_the_server(stream_addr):
    host, port = stream_addr
    stream = unique("tracked")

    async def go():
        await create_and_fill(host, port, stream, "t", 3)
        async with Consumer(host, port, username="guest", password="guest") as consumer:
            await consumer.store_offset(stream, "reader-1", 1)
            deadline = time.monotonic() + WAIT
            # StoreOffset has no reply: the query sees it once the stream has taken it.
            while await consumer.query_offset(stream, "reader-1") != 1:
                assert time.monotonic() < deadline, "the stored offset never showed"
                await asyncio.sleep(0.05)
        async with Producer(host, port, username="guest", password="guest") as producer:
            await producer.delete_stream(stream)

    run(go())
