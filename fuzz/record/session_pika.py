#!/usr/bin/env python3
"""One pika session for the seed corpus: declares with arguments, binds, consume, publishes
with headers and every property, confirms, tx, get/ack/nack/reject, deletes.  AMQP_URL."""
import datetime
import decimal
import os
import time

import pika

params = pika.URLParameters(os.environ["AMQP_URL"])
params.client_properties = {"connection_name": "fuzz-seed-pika"}
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.basic_qos(prefetch_count=10)
ch.exchange_declare("seed.topic", "topic", durable=True, arguments={"alternate-exchange": "seed.ae"})
ch.exchange_declare("seed.ae", "fanout")
ch.exchange_declare("seed.headers", "headers", auto_delete=True)
ch.exchange_bind("seed.ae", "seed.topic", "x.#")
q = ch.queue_declare(
    "seed.q",
    durable=True,
    arguments={
        "x-message-ttl": 60000,
        "x-max-length": 1000,
        "x-dead-letter-exchange": "seed.ae",
        "x-dead-letter-routing-key": "dead",
        "x-max-priority": 10,
        "x-queue-mode": "default",
    },
)
tmp = ch.queue_declare("", exclusive=True).method.queue
ch.queue_bind("seed.q", "seed.topic", "a.*.c")
ch.queue_bind(tmp, "seed.headers", "", arguments={"x-match": "any", "k": "v", "n": 42})
props = pika.BasicProperties(
    content_type="application/json",
    content_encoding="utf-8",
    headers={
        "k": "v",
        "n": 42,
        "neg": -7,
        "big": 2**40,
        "b": True,
        "d": decimal.Decimal("3.14"),
        "t": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "arr": [1, "two", [3, {"four": 4}], None],
        "tbl": {"inner": {"deeper": b"bytes"}},
    },
    delivery_mode=2,
    priority=5,
    correlation_id="corr-1",
    reply_to="replies",
    expiration="60000",
    message_id="m-1",
    timestamp=int(time.time()),
    type="seed",
    user_id="guest",
    app_id="fuzz-seed",
    cluster_id="",
)
ch.basic_publish("seed.topic", "a.b.c", b'{"hello": "world"}', props)
ch.basic_publish("seed.headers", "", b"to headers", pika.BasicProperties(headers={"k": "v"}))
ch.basic_publish("", "seed.q", b"x" * 5000, pika.BasicProperties(delivery_mode=1))
ch.basic_publish("", "seed.q", b"")
ch.confirm_delivery()
ch.basic_publish("seed.topic", "a.x.c", b"confirmed", pika.BasicProperties(priority=1), mandatory=True)
ch.basic_publish("seed.topic", "x.unrouted", b"to ae")
tx = conn.channel()
tx.tx_select()
tx.basic_publish("", "seed.q", b"in tx")
tx.tx_commit()
tx.basic_publish("", "seed.q", b"rolled back")
tx.tx_rollback()
tx.close()
m, _, body = ch.basic_get("seed.q")
ch.basic_ack(m.delivery_tag)
m, _, body = ch.basic_get("seed.q")
ch.basic_nack(m.delivery_tag, requeue=True)
m, _, body = ch.basic_get("seed.q")
ch.basic_reject(m.delivery_tag, requeue=False)
got = []


def on_message(c, method, properties, body):
    got.append(body)
    c.basic_ack(method.delivery_tag, multiple=True)


tag = ch.basic_consume("seed.q", on_message, arguments={"x-priority": 3}, consumer_tag="seed-consumer")
conn.process_data_events(time_limit=0.5)
ch.basic_cancel(tag)
ch.basic_recover(requeue=True)
ch.queue_unbind("seed.q", "seed.topic", "a.*.c")
ch.exchange_unbind("seed.ae", "seed.topic", "x.#")
ch.queue_purge("seed.q")
ch.queue_delete("seed.q")
ch.exchange_delete("seed.topic")
ch.exchange_delete("seed.ae")
ch.close()
conn.close()
print(f"pika session done ({len(got)} consumed)")
