// amqplib (promise API) against the broker named by $AMQP_URL.
//
// Covers: connect and server properties; assertQueue/assertExchange/bindQueue; publish,
// consume and ack; a confirm channel (publish callbacks + waitForConfirms); topic routing with
// `*` and `#`; prefetch (basic.qos); the `return` event for mandatory unroutable messages
// (delivered before that publish's confirm); sendToQueue with headers and properties surviving
// the round trip; an RPC round trip over direct reply-to (amq.rabbitmq.reply-to).
//
// Run with node's built-in runner: `node --test test.js`. Every wait is bounded by `within()`
// and every test by the runner's timeout, so a misbehaving broker fails instead of hanging.

'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const amqp = require('amqplib');

const URL = process.env.AMQP_URL;
if (!URL) {
  console.error('AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)');
  process.exit(2);
}
const WAIT_MS = 5000; // allowed for any single expected event
const TEST_TIMEOUT = { timeout: 15000 };

function unique(prefix) {
  return `interop-node-${prefix}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
}

function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Collects deliveries; `take(n)` resolves once n have arrived in total.
class Inbox {
  constructor() {
    this.messages = [];
    this.waiters = [];
  }
  push(msg) {
    this.messages.push(msg);
    this.waiters = this.waiters.filter((w) => (this.messages.length >= w.n ? (w.resolve(), false) : true));
  }
  take(n, what = `${n} deliveries`) {
    if (this.messages.length >= n) return Promise.resolve(this.messages.slice(0, n));
    return within(
      new Promise((resolve) => this.waiters.push({ n, resolve })).then(() => this.messages.slice(0, n)),
      what,
    );
  }
  // Bounded wait to assert that nothing more arrives within `ms` (the only timed wait allowed).
  async expectNoMore(ms = 300) {
    const before = this.messages.length;
    await new Promise((r) => setTimeout(r, ms));
    assert.equal(this.messages.length, before, `unexpected delivery within ${ms} ms`);
  }
}

// Opens a connection, runs `body(conn, declared)`, then deletes what was declared and closes.
async function withConnection(body) {
  const conn = await within(amqp.connect(URL), 'connect');
  conn.on('error', () => {}); // reported through the failing operation instead
  const declared = { queues: [], exchanges: [] };
  let failure;
  try {
    await body(conn, declared);
  } catch (err) {
    failure = err;
  }
  try {
    await within(
      (async () => {
        const ch = await conn.createChannel();
        for (const q of declared.queues) await ch.deleteQueue(q);
        for (const e of declared.exchanges) await ch.deleteExchange(e);
        await conn.close();
      })(),
      'cleanup and connection.close',
    );
  } catch (err) {
    failure = failure || err; // keep the test's own error if it had one
    conn.connection.stream.destroy();
  }
  if (failure) throw failure;
}

async function declareQueue(ch, declared, prefix, options = { durable: false }) {
  const name = unique(prefix);
  const ok = await ch.assertQueue(name, options);
  assert.deepEqual(ok, { queue: name, messageCount: 0, consumerCount: 0 });
  declared.queues.push(name);
  return name;
}

async function declareExchange(ch, declared, prefix, type) {
  const name = unique(prefix);
  const ok = await ch.assertExchange(name, type, { durable: false });
  assert.deepEqual(ok, { exchange: name });
  declared.exchanges.push(name);
  return name;
}

test('connect reports RabbitMQ-compatible server properties', TEST_TIMEOUT, async () => {
  await withConnection(async (conn) => {
    const props = conn.connection.serverProperties;
    assert.equal(props.product, 'RabbitMQ');
    assert.match(props.version, /^3\.\d+\.\d+/);
    for (const cap of ['publisher_confirms', 'basic.nack', 'consumer_cancel_notify', 'exchange_exchange_bindings']) {
      assert.equal(props.capabilities[cap], true, cap);
    }
  });
});

test('assertExchange/assertQueue/bindQueue, publish, consume and ack', TEST_TIMEOUT, async () => {
  await withConnection(async (conn, declared) => {
    const ch = await conn.createChannel();
    const ex = await declareExchange(ch, declared, 'direct', 'direct');
    const q = await declareQueue(ch, declared, 'q');
    assert.deepEqual(await ch.bindQueue(q, ex, 'rk'), {});

    const inbox = new Inbox();
    const { consumerTag } = await ch.consume(q, (msg) => inbox.push(msg));
    assert.match(consumerTag, /^amq\.ctag-/); // server-generated tag
    assert.equal(ch.publish(ex, 'rk', Buffer.from('hello amqplib'), { contentType: 'text/plain' }), true);

    const [msg] = await inbox.take(1);
    assert.equal(msg.content.toString(), 'hello amqplib');
    assert.equal(msg.fields.exchange, ex);
    assert.equal(msg.fields.routingKey, 'rk');
    assert.equal(msg.fields.consumerTag, consumerTag);
    assert.equal(msg.fields.deliveryTag, 1);
    assert.equal(msg.fields.redelivered, false);
    assert.equal(msg.properties.contentType, 'text/plain');
    ch.ack(msg);
    assert.deepEqual(await ch.cancel(consumerTag), { consumerTag });
    await ch.close(); // would requeue the message had the ack been lost
    const check = await conn.createChannel();
    assert.equal((await check.checkQueue(q)).messageCount, 0);
    await check.close();
  });
});

test('confirm channel: publish callbacks and waitForConfirms', TEST_TIMEOUT, async () => {
  await withConnection(async (conn, declared) => {
    const ch = await conn.createConfirmChannel();
    const q = await declareQueue(ch, declared, 'confirm');
    const settled = [];
    for (let i = 0; i < 10; i++) {
      ch.sendToQueue(q, Buffer.from(`m${i}`), {}, (err) => settled.push(err));
    }
    // Unroutable (no mandatory) messages are acked as well.
    ch.publish('', unique('nowhere'), Buffer.from('dropped'), {}, (err) => settled.push(err));
    await within(ch.waitForConfirms(), 'waitForConfirms');
    assert.equal(settled.length, 11);
    assert.ok(settled.every((err) => err === null || err === undefined), 'every publish acked, none nacked');
    assert.equal((await ch.checkQueue(q)).messageCount, 10);
  });
});

test('topic exchange routes * and # bindings', TEST_TIMEOUT, async () => {
  await withConnection(async (conn, declared) => {
    const ch = await conn.createConfirmChannel();
    const ex = await declareExchange(ch, declared, 'topic', 'topic');
    const star = await declareQueue(ch, declared, 'star');
    const hash = await declareQueue(ch, declared, 'hash');
    await ch.bindQueue(star, ex, 'log.*.error');
    await ch.bindQueue(hash, ex, 'log.#');
    const keys = ['log.app.error', 'log.error', 'log.app.db.error', 'log', 'audit.app.error', 'log..error'];
    for (const k of keys) ch.publish(ex, k, Buffer.from(k));
    await within(ch.waitForConfirms(), 'confirms'); // everything routed and enqueued

    async function drain(q) {
      const seen = [];
      for (;;) {
        const msg = await ch.get(q, { noAck: true });
        if (msg === false) return seen;
        assert.equal(msg.content.toString(), msg.fields.routingKey);
        seen.push(msg.fields.routingKey);
      }
    }
    assert.deepEqual(await drain(star), ['log.app.error', 'log..error']);
    assert.deepEqual(await drain(hash), ['log.app.error', 'log.error', 'log.app.db.error', 'log', 'log..error']);
  });
});

test('prefetch(2) holds back deliveries until acked', TEST_TIMEOUT, async () => {
  await withConnection(async (conn, declared) => {
    const ch = await conn.createConfirmChannel();
    const q = await declareQueue(ch, declared, 'prefetch');
    for (let i = 0; i < 5; i++) ch.sendToQueue(q, Buffer.from(String(i)));
    await within(ch.waitForConfirms(), 'confirms');
    await ch.prefetch(2);
    const inbox = new Inbox();
    await ch.consume(q, (msg) => inbox.push(msg));

    const firstTwo = await inbox.take(2, 'first two deliveries');
    await inbox.expectNoMore(); // only 2 unacked allowed
    assert.deepEqual(firstTwo.map((m) => m.content.toString()), ['0', '1']);

    ch.ack(firstTwo[0]);
    await inbox.take(3, 'third delivery after one ack');
    await inbox.expectNoMore(); // one ack releases exactly one delivery
    assert.equal(inbox.messages[2].content.toString(), '2');

    ch.ack(inbox.messages[2], true); // multiple: acks tags 2 and 3
    const all = await inbox.take(5, 'remaining deliveries');
    assert.deepEqual(all.map((m) => m.content.toString()), ['0', '1', '2', '3', '4']);
    assert.deepEqual(all.map((m) => m.fields.deliveryTag), [1, 2, 3, 4, 5]);
    ch.ackAll();
    await ch.close();
    const check = await conn.createChannel();
    assert.equal((await check.checkQueue(q)).messageCount, 0);
    await check.close();
  });
});

test("mandatory unroutable publish emits 'return' before its confirm", TEST_TIMEOUT, async () => {
  await withConnection(async (conn, declared) => {
    const ch = await conn.createConfirmChannel();
    const ex = await declareExchange(ch, declared, 'unroutable', 'direct');
    const events = [];
    const returned = new Promise((resolve) =>
      ch.on('return', (msg) => {
        events.push('return');
        resolve(msg);
      }),
    );
    const confirmed = new Promise((resolve) =>
      ch.publish(ex, 'no.binding', Buffer.from('bounce'), { mandatory: true, messageId: 'm-1', headers: { k: 'v' } }, (err) => {
        events.push(err ? 'nack' : 'ack');
        resolve();
      }),
    );
    const msg = await within(returned, "'return' event");
    await within(confirmed, 'publish confirm');
    assert.deepEqual(events, ['return', 'ack']); // returned messages are acked, not nacked
    assert.equal(msg.fields.replyCode, 312);
    assert.equal(msg.fields.replyText, 'NO_ROUTE');
    assert.equal(msg.fields.exchange, ex);
    assert.equal(msg.fields.routingKey, 'no.binding');
    assert.equal(msg.properties.messageId, 'm-1');
    assert.deepEqual(msg.properties.headers, { k: 'v' });
    assert.equal(msg.content.toString(), 'bounce');
  });
});

test('sendToQueue round-trips headers and properties', TEST_TIMEOUT, async () => {
  await withConnection(async (conn, declared) => {
    const ch = await conn.createChannel();
    const q = await declareQueue(ch, declared, 'props');
    const headers = {
      str: 'value',
      int: 42,
      negative: -7,
      big: 2 ** 40,
      float: 1.5,
      bool: true,
      bytes: Buffer.from([0, 1, 2, 255]),
      list: [1, 'two', false],
      nested: { a: 'b', n: 3 },
      nothing: null,
    };
    const props = {
      headers,
      contentType: 'application/json',
      contentEncoding: 'identity',
      deliveryMode: 2,
      priority: 4,
      correlationId: 'corr-1',
      replyTo: 'reply-q',
      expiration: '60000',
      messageId: 'msg-1',
      timestamp: 1700000000,
      type: 'kind',
      appId: 'interop',
    };
    assert.equal(ch.sendToQueue(q, Buffer.from('{"x":1}'), props), true);
    const inbox = new Inbox();
    await ch.consume(q, (msg) => inbox.push(msg), { noAck: true });
    const [msg] = await inbox.take(1);
    assert.equal(msg.content.toString(), '{"x":1}');
    assert.equal(msg.fields.exchange, '');
    assert.equal(msg.fields.routingKey, q);
    assert.deepEqual(msg.properties.headers, headers);
    for (const [key, value] of Object.entries(props)) {
      if (key !== 'headers') assert.equal(msg.properties[key], value, key);
    }
  });
});

test('RPC round trip over direct reply-to (amq.rabbitmq.reply-to)', TEST_TIMEOUT, async () => {
  await withConnection(async (responderConn, declared) => {
    // The responder, on its own connection: adds the two numbers of each request and replies
    // to msg.properties.replyTo through the default exchange, keeping the correlation id.
    const server = await responderConn.createChannel();
    const requests = await declareQueue(server, declared, 'rpc-requests');
    const seen = [];
    const responder = await server.consume(requests, (msg) => {
      if (msg === null) return; // basic.cancel from the broker (the queue was deleted)
      seen.push(msg);
      const [a, b] = JSON.parse(msg.content.toString());
      server.sendToQueue(msg.properties.replyTo, Buffer.from(JSON.stringify(a + b)), {
        correlationId: msg.properties.correlationId,
        contentType: 'application/json',
      });
      server.ack(msg);
    });

    await withConnection(async (clientConn) => {
      const client = await clientConn.createChannel();
      const replies = new Inbox();
      // No queue to declare: consuming the pseudo-queue (no-ack is required) enables direct reply-to.
      const { consumerTag } = await client.consume('amq.rabbitmq.reply-to', (msg) => replies.push(msg), { noAck: true });

      const ids = [0, 1, 2].map((i) => `${unique('corr')}-${i}`);
      ids.forEach((correlationId, i) => {
        client.sendToQueue(requests, Buffer.from(JSON.stringify([i, 10])), {
          replyTo: 'amq.rabbitmq.reply-to',
          correlationId,
        });
      });
      const got = await replies.take(3, 'three RPC replies');

      // The broker rewrote the bare name into a per-channel reply address before routing.
      assert.equal(seen.length, 3);
      const replyTo = seen[0].properties.replyTo;
      assert.match(replyTo, /^amq\.rabbitmq\.reply-to\..+/);
      assert.ok(seen.every((m) => m.properties.replyTo === replyTo), 'one reply address per channel');
      assert.deepEqual(seen.map((m) => m.properties.correlationId), ids);

      const byId = new Map(got.map((m) => [m.properties.correlationId, m]));
      assert.deepEqual([...byId.keys()].sort(), [...ids].sort());
      ids.forEach((id, i) => {
        const reply = byId.get(id);
        assert.equal(reply.content.toString(), String(i + 10));
        assert.equal(reply.properties.contentType, 'application/json');
        assert.equal(reply.fields.consumerTag, consumerTag);
        assert.equal(reply.fields.exchange, '');
        assert.equal(reply.fields.routingKey, replyTo);
        assert.equal(reply.fields.redelivered, false);
      });
      await replies.expectNoMore(); // exactly one reply per request
    });
    await server.cancel(responder.consumerTag);
  });
});
