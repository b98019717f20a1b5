// One amqplib session for the seed corpus (AMQP_URL): declares with arguments, binds, consume,
// publishes with headers and properties, a confirm channel, get/ack/nack, deletes.
'use strict';
const amqp = require('amqplib');

async function main() {
  const conn = await amqp.connect(process.env.AMQP_URL, { clientProperties: { connection_name: 'fuzz-seed-amqplib' } });
  const ch = await conn.createChannel();
  await ch.prefetch(5);
  await ch.assertExchange('seedjs.direct', 'direct', { durable: false, alternateExchange: 'seedjs.ae' });
  await ch.assertExchange('seedjs.ae', 'fanout', { autoDelete: true });
  await ch.assertQueue('seedjs.q', {
    durable: true,
    messageTtl: 30000,
    maxLength: 100,
    deadLetterExchange: 'seedjs.ae',
    maxPriority: 5,
    arguments: { 'x-overflow': 'reject-publish', 'x-single-active-consumer': false },
  });
  await ch.bindQueue('seedjs.q', 'seedjs.direct', 'rk', { 'x-note': 'bind-args' });
  await ch.bindExchange('seedjs.ae', 'seedjs.direct', 'alt');
  ch.publish('seedjs.direct', 'rk', Buffer.from('hello from amqplib'), {
    contentType: 'text/plain',
    contentEncoding: 'identity',
    headers: { 'x-list': [1, 'a', true], 'x-obj': { a: 1, b: { c: 'd' } }, 'x-num': 3.25, 'x-neg': -100000 },
    deliveryMode: 2,
    priority: 3,
    correlationId: 'c-js',
    replyTo: 'reply',
    expiration: '10000',
    messageId: 'id-js',
    timestamp: Math.floor(Date.now() / 1000),
    type: 'kind',
    userId: 'guest',
    appId: 'seed-js',
  });
  ch.sendToQueue('seedjs.q', Buffer.alloc(20000, 'y'), { persistent: false });
  const got = [];
  const { consumerTag } = await ch.consume('seedjs.q', (m) => { got.push(m); ch.ack(m); }, { priority: 2, exclusive: false, arguments: { 'x-cancel-on-ha-failover': true } });
  await new Promise((r) => setTimeout(r, 300));
  await ch.cancel(consumerTag);
  const cc = await conn.createConfirmChannel();
  cc.publish('seedjs.direct', 'rk', Buffer.from('confirmed'), { mandatory: true });
  cc.publish('seedjs.direct', 'nowhere', Buffer.from('to ae'), { mandatory: true });
  await cc.waitForConfirms();
  const m = await ch.get('seedjs.q');
  if (m) ch.nack(m, false, true);
  const m2 = await ch.get('seedjs.q', { noAck: false });
  if (m2) ch.reject(m2, false);
  await ch.recover();
  await ch.unbindQueue('seedjs.q', 'seedjs.direct', 'rk', { 'x-note': 'bind-args' });
  await ch.unbindExchange('seedjs.ae', 'seedjs.direct', 'alt');
  await ch.purgeQueue('seedjs.q');
  await ch.deleteQueue('seedjs.q', { ifEmpty: false });
  await ch.deleteExchange('seedjs.direct');
  await cc.close();
  await ch.close();
  await conn.close();
  console.log(`amqplib session done (${got.length} consumed)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
