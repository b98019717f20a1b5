package warren.interop;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.BlockedListener;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.ConfirmListener;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DefaultConsumer;
import com.rabbitmq.client.Envelope;
import com.rabbitmq.client.GetResponse;
import com.rabbitmq.client.LongString;
import com.rabbitmq.client.Recoverable;
import com.rabbitmq.client.RecoverableConnection;
import com.rabbitmq.client.RecoveryListener;
import com.rabbitmq.client.ShutdownSignalException;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Date;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentSkipListSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The official RabbitMQ Java client (com.rabbitmq:amqp-client 5.x) against the broker named by
 * AMQP_URL, doing what Java applications do. Every wait is bounded (5 s); every test has a 20 s
 * timeout. Names are unique per run: interop-java-WHAT-PID-RANDOM.
 */
@Timeout(value = 20, unit = TimeUnit.SECONDS)
class JavaClientTest {
    private static final long WAIT_SECONDS = 5;
    /** Only used to assert that something does NOT happen (no delivery beyond prefetch). */
    private static final long QUIET_MILLIS = 300;

    private Connection conn;
    private final List<String> queues = new ArrayList<>();
    private final List<String> exchanges = new ArrayList<>();

    static ConnectionFactory factory() throws Exception {
        String url = System.getenv("AMQP_URL");
        assertNotNull(url, "AMQP_URL must name the broker, e.g. amqp://guest:guest@127.0.0.1:5672/%2f");
        ConnectionFactory f = new ConnectionFactory();
        f.setUri(url);
        return f;
    }

    static String unique(String what) {
        return "interop-java-" + what + "-" + ProcessHandle.current().pid() + "-"
                + Integer.toHexString(ThreadLocalRandom.current().nextInt());
    }

    @BeforeEach
    void open() throws Exception {
        conn = factory().newConnection("warren-interop-java");
    }

    @AfterEach
    void cleanup() throws Exception {
        if (conn != null && conn.isOpen()) {
            Channel ch = conn.createChannel();
            for (String q : queues) {
                ch.queueDelete(q);
            }
            for (String e : exchanges) {
                ch.exchangeDelete(e);
            }
            conn.close();
        }
    }

    String queue(Channel ch, String what, boolean durable, Map<String, Object> args) throws IOException {
        String name = unique(what);
        AMQP.Queue.DeclareOk ok = ch.queueDeclare(name, durable, false, false, args);
        assertEquals(name, ok.getQueue());
        queues.add(name);
        return name;
    }

    String exchange(Channel ch, String what, String type) throws IOException {
        String name = unique(what);
        ch.exchangeDeclare(name, type, false, false, null);
        exchanges.add(name);
        return name;
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(Object o) {
        // The client decodes AMQP long strings as LongString, not java.lang.String.
        assertInstanceOf(LongString.class, o);
        return o.toString();
    }

    static <T> T take(BlockingQueue<T> q, String what) throws InterruptedException {
        T item = q.poll(WAIT_SECONDS, TimeUnit.SECONDS);
        if (item == null) {
            fail("timed out after " + WAIT_SECONDS + " s waiting for " + what);
        }
        return item;
    }

    record Delivery(String consumerTag, Envelope envelope, AMQP.BasicProperties props, byte[] body) {}

    static DefaultConsumer inbox(Channel ch, BlockingQueue<Delivery> into) {
        return new DefaultConsumer(ch) {
            @Override
            public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties props, byte[] body) {
                into.add(new Delivery(tag, env, props, body));
            }
        };
    }

    /** The AMQP method that closed a channel or connection, from the exception the client threw. */
    static ShutdownSignalException shutdownOf(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof ShutdownSignalException sse) {
                return sse;
            }
        }
        fail("no ShutdownSignalException in the cause chain of " + t);
        return null;
    }

    // ---------------------------------------------------------------------------------------

    @Test
    void connectsWithUriAndSeesRabbitMqServerProperties() throws Exception {
        Map<String, Object> props = conn.getServerProperties();
        assertEquals("RabbitMQ", str(props.get("product")));
        assertTrue(str(props.get("version")).startsWith("3."), "version " + props.get("version"));
        @SuppressWarnings("unchecked")
        Map<String, Object> caps = (Map<String, Object>) props.get("capabilities");
        for (String cap : List.of("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "connection.blocked", "exchange_exchange_bindings", "authentication_failure_close")) {
            assertEquals(Boolean.TRUE, caps.get(cap), "capability " + cap);
        }
        assertTrue(conn.isOpen());
        // The client asks for these on its own; what the broker agreed to is what it reports.
        assertEquals(2047, conn.getChannelMax());
        assertTrue(conn.getFrameMax() >= 4096);
        assertEquals(60, conn.getHeartbeat());
    }

    @Test
    void automaticRecoveryIsOnByDefaultAndACleanCloseDoesNotRecover() throws Exception {
        ConnectionFactory f = factory();
        assertTrue(f.isAutomaticRecoveryEnabled(), "the client's default");
        Connection c = f.newConnection();
        assertInstanceOf(RecoverableConnection.class, c);
        AtomicInteger recoveries = new AtomicInteger();
        ((RecoverableConnection) c).addRecoveryListener(new RecoveryListener() {
            @Override
            public void handleRecovery(Recoverable r) {
                recoveries.incrementAndGet();
            }

            @Override
            public void handleRecoveryStarted(Recoverable r) {
                recoveries.incrementAndGet();
            }
        });
        // connection.blocked / unblocked listeners can be registered (the broker advertises the
        // capability; triggering a memory alarm is out of scope here).
        BlockedListener bl = new BlockedListener() {
            @Override
            public void handleBlocked(String reason) {}

            @Override
            public void handleUnblocked() {}
        };
        c.addBlockedListener(bl);
        BlockingQueue<ShutdownSignalException> closed = new LinkedBlockingQueue<>();
        c.addShutdownListener(closed::add);

        Channel ch = c.createChannel();
        String q = ch.queueDeclare().getQueue();
        assertTrue(q.startsWith("amq.gen-"), q);
        ch.basicPublish("", q, null, utf8("before close"));
        assertNotNull(ch.basicGet(q, true));

        c.close();
        ShutdownSignalException why = take(closed, "connection shutdown");
        assertTrue(why.isInitiatedByApplication());
        assertTrue(why.isHardError());
        AMQP.Connection.Close close = (AMQP.Connection.Close) why.getReason();
        assertEquals(200, close.getReplyCode());
        assertFalse(c.isOpen());
        assertTrue(c.removeBlockedListener(bl));
        // Nothing may start a recovery after an application close (fixed wait: absence check).
        Thread.sleep(QUIET_MILLIS);
        assertEquals(0, recoveries.get());
        assertFalse(c.isOpen());
    }

    @Test
    void declaresDurableAndExclusiveQueuesWithArguments() throws Exception {
        Channel ch = conn.createChannel();
        Map<String, Object> args = new HashMap<>();
        args.put("x-message-ttl", 60000);
        args.put("x-max-length", 100);
        args.put("x-queue-mode", "lazy");
        args.put("x-max-priority", 5);
        String durable = queue(ch, "durable", true, args);
        // Redeclaring with the same arguments is fine; passive declare reports the counts.
        assertEquals(0, ch.queueDeclare(durable, true, false, false, args).getMessageCount());
        // Counts in declare-ok are only certain for confirmed publishes (RabbitMQ answers the
        // passive declare ahead of deliveries still on their way to the queue).
        ch.confirmSelect();
        ch.basicPublish("", durable, new AMQP.BasicProperties.Builder().priority(3).build(), utf8("x"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        AMQP.Queue.DeclareOk passive = ch.queueDeclarePassive(durable);
        assertEquals(1, passive.getMessageCount());
        assertEquals(0, passive.getConsumerCount());

        // Exclusive server-named queue: other connections may publish to it but not touch it.
        AMQP.Queue.DeclareOk excl = ch.queueDeclare("", false, true, true, Map.of("x-expires", 60000));
        String name = excl.getQueue();
        assertTrue(name.startsWith("amq.gen-"), name);
        try (Connection other = factory().newConnection()) {
            Channel och = other.createChannel();
            och.confirmSelect();
            och.basicPublish("", name, null, utf8("from another connection"));
            och.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
            IOException e = assertThrows(IOException.class, () -> och.queueDeclarePassive(name));
            AMQP.Channel.Close close = (AMQP.Channel.Close) shutdownOf(e).getReason();
            assertEquals(405, close.getReplyCode());
            assertEquals("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '" + name
                    + "' in vhost '/'. It could be originally declared on another connection or the "
                    + "exclusive property value does not match that of the original declaration.",
                    close.getReplyText());
        }
        GetResponse got = ch.basicGet(name, true);
        assertNotNull(got);
        assertEquals("from another connection", new String(got.getBody(), StandardCharsets.UTF_8));
    }

    @Test
    void inequivalentRedeclareIs406ShutdownSignalAndOnlyTheChannelCloses() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "inequivalent", false, Map.of("x-message-ttl", 1000));
        BlockingQueue<ShutdownSignalException> chClosed = new LinkedBlockingQueue<>();
        ch.addShutdownListener(chClosed::add);

        IOException e = assertThrows(IOException.class,
                () -> ch.queueDeclare(q, false, false, false, Map.of("x-message-ttl", 2000)));
        ShutdownSignalException sse = shutdownOf(e);
        assertFalse(sse.isHardError(), "a channel error, not a connection error");
        assertFalse(sse.isInitiatedByApplication());
        AMQP.Channel.Close close = (AMQP.Channel.Close) sse.getReason();
        assertEquals(406, close.getReplyCode());
        assertEquals("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '" + q
                + "' in vhost '/': received '2000' but current is '1000'", close.getReplyText());
        assertEquals(50, close.getClassId());
        assertEquals(10, close.getMethodId());
        assertEquals(406, ((AMQP.Channel.Close) take(chClosed, "channel shutdown listener").getReason())
                .getReplyCode());
        assertFalse(ch.isOpen());
        assertTrue(conn.isOpen());

        // The connection is unharmed: a new channel works.
        Channel again = conn.createChannel();
        assertEquals(0, again.queueDeclarePassive(q).getMessageCount());
    }

    @Test
    void ackOfUnknownDeliveryTagClosesTheChannelWith406() throws Exception {
        Channel ch = conn.createChannel();
        BlockingQueue<ShutdownSignalException> chClosed = new LinkedBlockingQueue<>();
        ch.addShutdownListener(chClosed::add);
        ch.basicAck(99, false); // asynchronous: the error arrives as channel.close
        ShutdownSignalException sse = take(chClosed, "channel.close for an unknown tag");
        AMQP.Channel.Close close = (AMQP.Channel.Close) sse.getReason();
        assertEquals(406, close.getReplyCode());
        assertEquals("PRECONDITION_FAILED - unknown delivery tag 99", close.getReplyText());
        assertFalse(sse.isHardError());
        assertTrue(conn.isOpen());
    }

    @Test
    void publishRoundTripsPropertiesAndHeaders() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "headers", false, null);
        Date ts = new Date(1700000000000L); // AMQP timestamps have whole seconds
        Map<String, Object> nested = new HashMap<>();
        nested.put("inner", "value");
        nested.put("deeper", Map.of("n", 7));
        Map<String, Object> headers = new HashMap<>();
        headers.put("string", "hé llo");
        headers.put("int", 42);
        headers.put("negative", -7);
        headers.put("long", 1L << 40);
        headers.put("short", (short) 300);
        headers.put("byte", (byte) -5);
        headers.put("float", 1.5f);
        headers.put("double", 2.25d);
        headers.put("bool", true);
        headers.put("decimal", new BigDecimal("123.45"));
        headers.put("negative-decimal", new BigDecimal("-0.001"));
        headers.put("timestamp", ts);
        headers.put("bytes", new byte[] {0, 1, (byte) 0xff});
        headers.put("list", Arrays.asList("a", 1, true, Map.of("k", "v")));
        headers.put("nested", nested);
        headers.put("null", null);
        AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
                .contentType("application/json")
                .contentEncoding("utf-8")
                .headers(headers)
                .deliveryMode(2)
                .priority(4)
                .correlationId("corr-1")
                .replyTo("reply-queue")
                .expiration("60000")
                .messageId("msg-1")
                .timestamp(ts)
                .type("order.created")
                .userId("guest")
                .appId("interop-java")
                .build();
        ch.confirmSelect();
        ch.basicPublish("", q, props, utf8("{\"ok\":true}"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);

        GetResponse got = ch.basicGet(q, true);
        assertNotNull(got);
        AMQP.BasicProperties p = got.getProps();
        assertEquals("application/json", p.getContentType());
        assertEquals("utf-8", p.getContentEncoding());
        assertEquals(2, p.getDeliveryMode());
        assertEquals(4, p.getPriority());
        assertEquals("corr-1", p.getCorrelationId());
        assertEquals("reply-queue", p.getReplyTo());
        assertEquals("60000", p.getExpiration());
        assertEquals("msg-1", p.getMessageId());
        assertEquals(ts, p.getTimestamp());
        assertEquals("order.created", p.getType());
        assertEquals("guest", p.getUserId());
        assertEquals("interop-java", p.getAppId());
        assertNull(p.getClusterId());

        Map<String, Object> h = p.getHeaders();
        assertEquals(headers.keySet(), h.keySet());
        assertEquals("hé llo", str(h.get("string")));
        assertEquals(42, h.get("int"));
        assertEquals(-7, h.get("negative"));
        assertEquals(1L << 40, h.get("long"));
        assertEquals((short) 300, h.get("short"));
        assertEquals((byte) -5, h.get("byte"));
        assertEquals(1.5f, h.get("float"));
        assertEquals(2.25d, h.get("double"));
        assertEquals(true, h.get("bool"));
        assertEquals(new BigDecimal("123.45"), h.get("decimal"));
        assertEquals(new BigDecimal("-0.001"), h.get("negative-decimal"));
        assertEquals(ts, h.get("timestamp"));
        assertArrayEquals(new byte[] {0, 1, (byte) 0xff}, (byte[]) h.get("bytes"));
        List<?> list = (List<?>) h.get("list");
        assertEquals(4, list.size());
        assertEquals("a", str(list.get(0)));
        assertEquals(1, list.get(1));
        assertEquals(true, list.get(2));
        assertEquals("v", str(((Map<?, ?>) list.get(3)).get("k")));
        Map<?, ?> n = (Map<?, ?>) h.get("nested");
        assertEquals("value", str(n.get("inner")));
        assertEquals(7, ((Map<?, ?>) n.get("deeper")).get("n"));
        assertTrue(h.containsKey("null"));
        assertNull(h.get("null"));
        assertEquals("{\"ok\":true}", new String(got.getBody(), StandardCharsets.UTF_8));
    }

    @Test
    void consumeWithManualAckAndPrefetch() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "prefetch", false, null);
        for (int i = 1; i <= 5; i++) {
            ch.basicPublish("", q, null, utf8("m" + i));
        }
        ch.basicQos(2);
        BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
        String tag = ch.basicConsume(q, false, inbox(ch, inbox));
        assertTrue(tag.startsWith("amq.ctag-"), tag);

        Delivery d1 = take(inbox, "delivery 1");
        Delivery d2 = take(inbox, "delivery 2");
        assertEquals(tag, d1.consumerTag());
        assertEquals(1, d1.envelope().getDeliveryTag());
        assertEquals(2, d2.envelope().getDeliveryTag());
        assertEquals("m1", new String(d1.body(), StandardCharsets.UTF_8));
        assertEquals("", d1.envelope().getExchange());
        assertEquals(q, d1.envelope().getRoutingKey());
        assertFalse(d1.envelope().isRedeliver());
        // Fixed wait: checks that nothing beyond the prefetch window arrives.
        assertNull(inbox.poll(QUIET_MILLIS, TimeUnit.MILLISECONDS));

        ch.basicAck(1, false);
        Delivery d3 = take(inbox, "delivery 3");
        assertEquals(3, d3.envelope().getDeliveryTag());
        assertNull(inbox.poll(QUIET_MILLIS, TimeUnit.MILLISECONDS));

        ch.basicAck(3, true); // settles 2 and 3
        assertEquals(4, take(inbox, "delivery 4").envelope().getDeliveryTag());
        assertEquals(5, take(inbox, "delivery 5").envelope().getDeliveryTag());
        ch.basicAck(5, true);
        ch.basicCancel(tag);
        assertEquals(0, ch.queueDeclarePassive(q).getMessageCount());
    }

    @Test
    void basicGetAndAck() throws Exception {
        Channel ch = conn.createChannel();
        String x = exchange(ch, "get", "direct");
        String q = queue(ch, "get", false, null);
        ch.queueBind(q, x, "k");
        ch.confirmSelect();
        ch.basicPublish(x, "k", new AMQP.BasicProperties.Builder().messageId("a").build(), utf8("one"));
        ch.basicPublish(x, "k", null, utf8("two"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000); // both are in the queue

        GetResponse g = ch.basicGet(q, false);
        assertNotNull(g);
        assertEquals(1, g.getMessageCount(), "messages left after this one");
        assertEquals(1, g.getEnvelope().getDeliveryTag());
        assertEquals(x, g.getEnvelope().getExchange());
        assertEquals("k", g.getEnvelope().getRoutingKey());
        assertFalse(g.getEnvelope().isRedeliver());
        assertEquals("a", g.getProps().getMessageId());
        ch.basicAck(g.getEnvelope().getDeliveryTag(), false);

        GetResponse g2 = ch.basicGet(q, false);
        assertEquals(0, g2.getMessageCount());
        assertEquals("two", new String(g2.getBody(), StandardCharsets.UTF_8));
        ch.basicAck(g2.getEnvelope().getDeliveryTag(), false);
        assertNull(ch.basicGet(q, false), "basic.get-empty");
    }

    @Test
    void publisherConfirmsWaitForConfirmsOrDie() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "confirms", true, null);
        ch.confirmSelect();
        assertEquals(1, ch.getNextPublishSeqNo());
        AMQP.BasicProperties persistent = new AMQP.BasicProperties.Builder().deliveryMode(2).build();
        for (int i = 0; i < 20; i++) {
            ch.basicPublish("", q, persistent, utf8("c" + i));
        }
        ch.basicPublish("", unique("no-such-queue"), null, utf8("unroutable, not mandatory"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        assertEquals(22, ch.getNextPublishSeqNo());
        assertEquals(20, ch.queueDeclarePassive(q).getMessageCount());
    }

    @Test
    void publisherConfirmsAsyncConfirmListener() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "confirm-listener", false, null);
        ch.confirmSelect();
        Set<Long> acked = new ConcurrentSkipListSet<>();
        Set<Long> nacked = new ConcurrentSkipListSet<>();
        int n = 50;
        CountDownLatch all = new CountDownLatch(n);
        TreeSet<Long> outstanding = new TreeSet<>();
        ch.addConfirmListener(new ConfirmListener() {
            @Override
            public void handleAck(long seq, boolean multiple) {
                settle(seq, multiple, acked);
            }

            @Override
            public void handleNack(long seq, boolean multiple) {
                settle(seq, multiple, nacked);
            }

            private void settle(long seq, boolean multiple, Set<Long> into) {
                synchronized (outstanding) {
                    Set<Long> done = multiple ? new TreeSet<>(outstanding.headSet(seq, true)) : Set.of(seq);
                    for (Long s : done) {
                        if (outstanding.remove(s)) {
                            into.add(s);
                            all.countDown();
                        }
                    }
                }
            }
        });
        for (int i = 0; i < n; i++) {
            synchronized (outstanding) {
                outstanding.add(ch.getNextPublishSeqNo());
            }
            ch.basicPublish("", q, null, utf8("a" + i));
        }
        assertTrue(all.await(WAIT_SECONDS, TimeUnit.SECONDS), "all " + n + " publishes confirmed");
        assertEquals(n, acked.size());
        assertTrue(nacked.isEmpty());
        assertEquals(1L, acked.iterator().next());
        assertEquals(n, ch.queueDeclarePassive(q).getMessageCount());
    }

    @Test
    void mandatoryUnroutablePublishIsReturnedBeforeItsConfirm() throws Exception {
        Channel ch = conn.createChannel();
        String x = exchange(ch, "mandatory", "direct");
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        BlockingQueue<Object[]> returns = new LinkedBlockingQueue<>();
        ch.addReturnListener((code, text, exchange, key, props, body) -> {
            returns.add(new Object[] {code, text, exchange, key, props, body});
            events.add("return");
        });
        ch.confirmSelect();
        ch.addConfirmListener(new ConfirmListener() {
            @Override
            public void handleAck(long seq, boolean multiple) {
                events.add("ack " + seq);
            }

            @Override
            public void handleNack(long seq, boolean multiple) {
                events.add("nack " + seq);
            }
        });
        AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
                .messageId("lost").headers(Map.of("h", 1)).build();
        ch.basicPublish(x, "nowhere", true, props, utf8("unroutable"));

        assertEquals("return", take(events, "basic.return"));
        assertEquals("ack 1", take(events, "basic.ack"));
        Object[] r = take(returns, "return details");
        assertEquals(312, r[0]);
        assertEquals("NO_ROUTE", r[1]);
        assertEquals(x, r[2]);
        assertEquals("nowhere", r[3]);
        AMQP.BasicProperties rp = (AMQP.BasicProperties) r[4];
        assertEquals("lost", rp.getMessageId());
        assertEquals(1, rp.getHeaders().get("h"));
        assertEquals("unroutable", new String((byte[]) r[5], StandardCharsets.UTF_8));
        assertTrue(ch.isOpen());
    }

    @Test
    void mandatoryReturnWithoutConfirms() throws Exception {
        Channel ch = conn.createChannel();
        BlockingQueue<Integer> codes = new LinkedBlockingQueue<>();
        ch.addReturnListener((code, text, exchange, key, props, body) -> codes.add(code));
        String q = queue(ch, "routable", false, null);
        ch.basicPublish("", q, true, null, utf8("routed"));
        ch.basicPublish("", unique("absent"), true, null, utf8("not routed"));
        assertEquals(312, take(codes, "basic.return"));
        BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
        ch.basicConsume(q, true, inbox(ch, inbox));
        assertEquals("routed", new String(take(inbox, "the routed message").body(), StandardCharsets.UTF_8));
        assertTrue(codes.isEmpty(), "only the unroutable publish is returned");
    }

    @Test
    void nackWithRequeueRedeliversWithRedeliveredFlagAndRejectDiscards() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "nack", false, null);
        ch.basicQos(1);
        BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
        ch.basicPublish("", q, null, utf8("again"));
        ch.basicConsume(q, false, inbox(ch, inbox));

        Delivery first = take(inbox, "first delivery");
        assertFalse(first.envelope().isRedeliver());
        ch.basicNack(first.envelope().getDeliveryTag(), false, true);
        Delivery second = take(inbox, "redelivery");
        assertTrue(second.envelope().isRedeliver());
        assertEquals("again", new String(second.body(), StandardCharsets.UTF_8));
        assertEquals(first.envelope().getDeliveryTag() + 1, second.envelope().getDeliveryTag());

        ch.basicReject(second.envelope().getDeliveryTag(), false);
        assertNull(inbox.poll(QUIET_MILLIS, TimeUnit.MILLISECONDS)); // fixed wait: nothing comes back
        assertEquals(0, ch.queueDeclarePassive(q).getMessageCount());
    }

    @Test
    void deadLetteringAddsXDeathHeaders() throws Exception {
        Channel ch = conn.createChannel();
        String dlx = exchange(ch, "dlx", "direct");
        String dlq = queue(ch, "dlq", false, null);
        ch.queueBind(dlq, dlx, "dead");
        Map<String, Object> args = new HashMap<>();
        args.put("x-dead-letter-exchange", dlx);
        args.put("x-dead-letter-routing-key", "dead");
        String src = queue(ch, "dl-source", false, args);

        ch.confirmSelect();
        ch.basicPublish("", src, new AMQP.BasicProperties.Builder()
                .headers(Map.of("app", "kept")).build(), utf8("reject me"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        GetResponse g = ch.basicGet(src, false);
        assertNotNull(g);
        ch.basicReject(g.getEnvelope().getDeliveryTag(), false);
        // A per-message TTL of 0 dead-letters the second one as expired.
        ch.basicPublish("", src, new AMQP.BasicProperties.Builder().expiration("0").build(), utf8("expire me"));

        BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
        ch.basicConsume(dlq, true, inbox(ch, inbox));
        Delivery rejected = take(inbox, "rejected message in the dead-letter queue");
        Delivery expired = take(inbox, "expired message in the dead-letter queue");
        assertEquals("reject me", new String(rejected.body(), StandardCharsets.UTF_8));
        assertEquals(dlx, rejected.envelope().getExchange());
        assertEquals("dead", rejected.envelope().getRoutingKey());

        Map<String, Object> h = rejected.props().getHeaders();
        assertEquals("kept", str(h.get("app")));
        assertEquals("rejected", str(h.get("x-first-death-reason")));
        assertEquals(src, str(h.get("x-first-death-queue")));
        assertEquals("", str(h.get("x-first-death-exchange")));
        List<?> deaths = (List<?>) h.get("x-death");
        assertEquals(1, deaths.size());
        Map<?, ?> death = (Map<?, ?>) deaths.get(0);
        assertEquals(1L, death.get("count"));
        assertEquals("rejected", str(death.get("reason")));
        assertEquals(src, str(death.get("queue")));
        assertEquals("", str(death.get("exchange")));
        List<?> keys = (List<?>) death.get("routing-keys");
        assertEquals(1, keys.size());
        assertEquals(src, str(keys.get(0)));
        assertInstanceOf(Date.class, death.get("time"));
        long age = Math.abs(System.currentTimeMillis() - ((Date) death.get("time")).getTime());
        assertTrue(age < 60_000, "x-death time is now, was " + death.get("time"));

        Map<?, ?> expiredDeath = (Map<?, ?>) ((List<?>) expired.props().getHeaders().get("x-death")).get(0);
        assertEquals("expired", str(expiredDeath.get("reason")));
        assertEquals("0", str(expiredDeath.get("original-expiration")));
        assertNull(expired.props().getExpiration(), "expiration is removed when dead-lettered");
    }

    @Test
    void topicExchangeRoutesStarAndHash() throws Exception {
        Channel ch = conn.createChannel();
        String x = exchange(ch, "topic", "topic");
        String nyse = queue(ch, "nyse", false, null);
        String all = queue(ch, "all", false, null);
        ch.queueBind(nyse, x, "stock.*.nyse");
        ch.queueBind(all, x, "stock.#");
        List<String> keys = List.of("stock.ibm.nyse", "stock.nyse", "stock", "stock.a.b.nyse",
                "stock..nyse", "bond.ibm.nyse", "stock.msft.nasdaq");
        for (String k : keys) {
            ch.basicPublish(x, k, null, utf8(k));
        }
        assertEquals(List.of("stock.ibm.nyse", "stock..nyse"), drain(ch, nyse, 2));
        assertEquals(List.of("stock.ibm.nyse", "stock.nyse", "stock", "stock.a.b.nyse", "stock..nyse",
                "stock.msft.nasdaq"), drain(ch, all, 6));
    }

    @Test
    void serverCancelsConsumerWhenItsQueueIsDeleted() throws Exception {
        Channel ch = conn.createChannel();
        String q = unique("cancel-notify");
        ch.queueDeclare(q, false, false, false, null);
        BlockingQueue<String> cancelled = new LinkedBlockingQueue<>();
        String tag = ch.basicConsume(q, false, "java-consumer-1", new DefaultConsumer(ch) {
            @Override
            public void handleCancel(String consumerTag) {
                cancelled.add(consumerTag);
            }
        });
        assertEquals("java-consumer-1", tag);
        Channel other = conn.createChannel();
        assertEquals(0, other.queueDelete(q).getMessageCount());
        assertEquals("java-consumer-1", take(cancelled, "basic.cancel from the broker"));
        assertTrue(ch.isOpen());
    }

    @Test
    void exclusiveConsumerLocksOutOthers() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "exclusive-consumer", false, null);
        ch.basicConsume(q, false, "", false, true, null, new DefaultConsumer(ch));
        Channel other = conn.createChannel();
        IOException e = assertThrows(IOException.class,
                () -> other.basicConsume(q, false, new DefaultConsumer(other)));
        AMQP.Channel.Close close = (AMQP.Channel.Close) shutdownOf(e).getReason();
        assertEquals(403, close.getReplyCode());
        assertEquals("ACCESS_REFUSED - queue '" + q + "' in vhost '/' in exclusive use", close.getReplyText());
    }

    @Test
    void missingExchangeIs404OnPassiveDeclareAndOnPublish() throws Exception {
        Channel ch = conn.createChannel();
        String x = unique("absent-exchange");
        IOException e = assertThrows(IOException.class, () -> ch.exchangeDeclarePassive(x));
        AMQP.Channel.Close close = (AMQP.Channel.Close) shutdownOf(e).getReason();
        assertEquals(404, close.getReplyCode());
        assertEquals("NOT_FOUND - no exchange '" + x + "' in vhost '/'", close.getReplyText());

        // Publishing to a missing exchange is asynchronous: the channel closes afterwards.
        Channel ch2 = conn.createChannel();
        BlockingQueue<ShutdownSignalException> closed = new LinkedBlockingQueue<>();
        ch2.addShutdownListener(closed::add);
        ch2.basicPublish(x, "k", null, utf8("lost"));
        AMQP.Channel.Close c2 = (AMQP.Channel.Close) take(closed, "channel.close").getReason();
        assertEquals(404, c2.getReplyCode());
        assertEquals("NOT_FOUND - no exchange '" + x + "' in vhost '/'", c2.getReplyText());
        assertEquals(60, c2.getClassId());
        assertEquals(40, c2.getMethodId());
    }

    @Test
    void purgeAndConditionalDelete() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "purge", false, null);
        ch.confirmSelect();
        for (int i = 0; i < 3; i++) {
            ch.basicPublish("", q, null, utf8("p" + i));
        }
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        IOException e = assertThrows(IOException.class, () -> ch.queueDelete(q, false, true));
        AMQP.Channel.Close close = (AMQP.Channel.Close) shutdownOf(e).getReason();
        assertEquals(406, close.getReplyCode());
        assertEquals("PRECONDITION_FAILED - queue '" + q + "' in vhost '/' not empty", close.getReplyText());
        Channel ch2 = conn.createChannel();
        assertEquals(3, ch2.queuePurge(q).getMessageCount());
        assertEquals(0, ch2.queueDelete(q, true, true).getMessageCount());
        queues.remove(q);
    }

    @Test
    void transactionsCommitAndRollback() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "tx", false, null);
        ch.txSelect();
        ch.basicPublish("", q, null, utf8("rolled back"));
        ch.txRollback();
        ch.basicPublish("", q, null, utf8("committed"));
        ch.txCommit();
        GetResponse g = ch.basicGet(q, true);
        assertNotNull(g);
        assertEquals("committed", new String(g.getBody(), StandardCharsets.UTF_8));
        assertNull(ch.basicGet(q, true));
        // confirm.select on a transactional channel is refused.
        IOException e = assertThrows(IOException.class, ch::confirmSelect);
        AMQP.Channel.Close close = (AMQP.Channel.Close) shutdownOf(e).getReason();
        assertEquals(406, close.getReplyCode());
        assertEquals("PRECONDITION_FAILED - cannot switch from tx to confirm mode", close.getReplyText());
    }

    @Test
    void largeMessageSpansManyFrames() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "large", false, null);
        byte[] body = new byte[3 * 1024 * 1024 + 17];
        ThreadLocalRandom.current().nextBytes(body);
        ch.confirmSelect();
        ch.basicPublish("", q, null, body);
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        GetResponse g = ch.basicGet(q, true);
        assertArrayEquals(body, g.getBody());
    }

    @Test
    void headersExchangeAndExchangeToExchangeBinding() throws Exception {
        Channel ch = conn.createChannel();
        String hx = unique("headers");
        ch.exchangeDeclare(hx, "headers", false, true, null);
        String fx = exchange(ch, "e2e-source", "fanout");
        ch.exchangeBind(hx, fx, "");
        String q = queue(ch, "headers-any", false, null);
        ch.queueBind(q, hx, "", Map.of("x-match", "any", "format", "pdf", "type", "report"));
        ch.confirmSelect();
        ch.basicPublish(fx, "", new AMQP.BasicProperties.Builder().headers(Map.of("format", "pdf")).build(),
                utf8("pdf"));
        ch.basicPublish(fx, "", new AMQP.BasicProperties.Builder().headers(Map.of("format", "zip")).build(),
                utf8("zip"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        assertEquals(List.of("pdf"), drain(ch, q, 1));
        // auto-delete exchange: goes away with its last binding (the queue's; the e2e binding is
        // one where it is the destination).
        ch.queueUnbind(q, hx, "", Map.of("x-match", "any", "format", "pdf", "type", "report"));
        ch.exchangeUnbind(hx, fx, "");
        IOException e = assertThrows(IOException.class, () -> ch.exchangeDeclarePassive(hx));
        assertEquals(404, ((AMQP.Channel.Close) shutdownOf(e).getReason()).getReplyCode());
    }

    @Test
    void wrongPasswordIsAuthenticationFailure() throws Exception {
        ConnectionFactory f = factory();
        f.setPassword("definitely-wrong");
        f.setAutomaticRecoveryEnabled(false);
        com.rabbitmq.client.AuthenticationFailureException e =
                assertThrows(com.rabbitmq.client.AuthenticationFailureException.class, f::newConnection);
        assertEquals("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details "
                + "see the broker logfile.", e.getMessage());
    }

    @Test
    void directReplyToRpc() throws Exception {
        Channel client = conn.createChannel();
        String rq = queue(client, "rpc-server", false, null);
        BlockingQueue<Delivery> replies = new LinkedBlockingQueue<>();
        client.basicConsume("amq.rabbitmq.reply-to", true, inbox(client, replies));
        try (Connection serverConn = factory().newConnection()) {
            Channel server = serverConn.createChannel();
            server.basicConsume(rq, true, new DefaultConsumer(server) {
                @Override
                public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties props, byte[] body)
                        throws IOException {
                    AMQP.BasicProperties reply = new AMQP.BasicProperties.Builder()
                            .correlationId(props.getCorrelationId()).build();
                    server.basicPublish("", props.getReplyTo(), reply, utf8("re: " + new String(body,
                            StandardCharsets.UTF_8)));
                }
            });
            client.basicPublish("", rq, new AMQP.BasicProperties.Builder()
                    .replyTo("amq.rabbitmq.reply-to").correlationId("c-1").build(), utf8("ping"));
            Delivery d = take(replies, "direct reply");
            assertEquals("re: ping", new String(d.body(), StandardCharsets.UTF_8));
            assertEquals("c-1", d.props().getCorrelationId());
            assertTrue(d.envelope().getRoutingKey().startsWith("amq.rabbitmq.reply-to."),
                    d.envelope().getRoutingKey());
        }
    }

    @Test
    void basicRecoverRedeliversUnacked() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "recover", false, null);
        BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
        ch.basicPublish("", q, null, utf8("r"));
        ch.basicConsume(q, false, inbox(ch, inbox));
        Delivery first = take(inbox, "first delivery");
        assertFalse(first.envelope().isRedeliver());
        ch.basicRecover(true);
        Delivery again = take(inbox, "redelivery after basic.recover");
        assertTrue(again.envelope().isRedeliver());
        assertEquals("r", new String(again.body(), StandardCharsets.UTF_8));
        ch.basicAck(again.envelope().getDeliveryTag(), false);
    }

    @Test
    void prefetchSizeIsNotImplementedConnectionError() throws Exception {
        ConnectionFactory f = factory();
        f.setAutomaticRecoveryEnabled(false);
        try (Connection c = f.newConnection()) {
            Channel ch = c.createChannel();
            IOException e = assertThrows(IOException.class, () -> ch.basicQos(1000, 10, false));
            ShutdownSignalException sse = shutdownOf(e);
            assertTrue(sse.isHardError(), "540 closes the connection");
            AMQP.Connection.Close close = (AMQP.Connection.Close) sse.getReason();
            assertEquals(540, close.getReplyCode());
            assertEquals("NOT_IMPLEMENTED - prefetch_size!=0 (1000)", close.getReplyText());
            assertFalse(c.isOpen());
        } catch (com.rabbitmq.client.AlreadyClosedException ignored) {
            // try-with-resources close() of an already closed connection
        }
    }

    /** The channel.close a synchronous call provoked. */
    static AMQP.Channel.Close channelCloseOf(Executable call) {
        IOException e = assertThrows(IOException.class, call::run);
        return (AMQP.Channel.Close) shutdownOf(e).getReason();
    }

    interface Executable {
        void run() throws Exception;
    }

    @Test
    void reservedNamesInternalExchangesAndMissingQueues() throws Exception {
        AMQP.Channel.Close c1 = channelCloseOf(() -> conn.createChannel().queueDeclare("amq.java-test", false,
                false, true, null));
        assertEquals(403, c1.getReplyCode());
        assertEquals("ACCESS_REFUSED - queue name 'amq.java-test' contains reserved prefix 'amq.*'",
                c1.getReplyText());

        Channel ch = conn.createChannel();
        String internal = unique("internal");
        ch.exchangeDeclare(internal, "fanout", false, true, true, null);
        BlockingQueue<ShutdownSignalException> closed = new LinkedBlockingQueue<>();
        ch.addShutdownListener(closed::add);
        ch.basicPublish(internal, "", null, utf8("x"));
        AMQP.Channel.Close c2 = (AMQP.Channel.Close) take(closed, "channel.close").getReason();
        assertEquals(403, c2.getReplyCode());
        assertEquals("ACCESS_REFUSED - cannot publish to internal exchange '" + internal + "' in vhost '/'",
                c2.getReplyText());

        String missing = unique("missing");
        AMQP.Channel.Close c3 = channelCloseOf(() -> conn.createChannel().queueBind(missing, "amq.direct", "k"));
        assertEquals(404, c3.getReplyCode());
        assertEquals("NOT_FOUND - no queue '" + missing + "' in vhost '/'", c3.getReplyText());
    }

    @Test
    void immediatePublishIsNotImplemented() throws Exception {
        ConnectionFactory f = factory();
        f.setAutomaticRecoveryEnabled(false);
        Connection c = f.newConnection();
        BlockingQueue<ShutdownSignalException> closed = new LinkedBlockingQueue<>();
        c.addShutdownListener(closed::add);
        c.createChannel().basicPublish("", "whatever", false, true, null, utf8("immediate"));
        ShutdownSignalException sse = take(closed, "connection.close");
        assertTrue(sse.isHardError());
        AMQP.Connection.Close close = (AMQP.Connection.Close) sse.getReason();
        assertEquals(540, close.getReplyCode());
        assertEquals("NOT_IMPLEMENTED - immediate=true", close.getReplyText());
    }

    @Test
    void alternateExchangeTakesUnroutedMessages() throws Exception {
        Channel ch = conn.createChannel();
        String ae = exchange(ch, "ae", "fanout");
        String aq = queue(ch, "ae-queue", false, null);
        ch.queueBind(aq, ae, "");
        String x = unique("with-ae");
        ch.exchangeDeclare(x, "direct", false, false, Map.of("alternate-exchange", ae));
        exchanges.add(x);
        BlockingQueue<Integer> returns = new LinkedBlockingQueue<>();
        ch.addReturnListener((code, text, exchange, key, props, body) -> returns.add(code));
        ch.confirmSelect();
        ch.basicPublish(x, "unbound", true, null, utf8("to the AE"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        GetResponse g = ch.basicGet(aq, true);
        assertNotNull(g);
        assertEquals(x, g.getEnvelope().getExchange());
        assertEquals("unbound", g.getEnvelope().getRoutingKey());
        assertTrue(returns.isEmpty(), "routed via the alternate exchange, so not returned");
    }

    @Test
    void priorityQueueDeliversHighestFirst() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "priority", false, Map.of("x-max-priority", 10));
        ch.confirmSelect();
        int[] priorities = {1, 5, 0, 9, 5, 20};
        for (int i = 0; i < priorities.length; i++) {
            ch.basicPublish("", q, new AMQP.BasicProperties.Builder().priority(priorities[i]).build(),
                    utf8("p" + priorities[i] + "-" + i));
        }
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        List<String> got = new ArrayList<>();
        for (GetResponse g; (g = ch.basicGet(q, true)) != null; ) {
            got.add(new String(g.getBody(), StandardCharsets.UTF_8));
        }
        // Priorities above x-max-priority count as the maximum; equal priorities keep FIFO order.
        assertEquals(List.of("p20-5", "p9-3", "p5-1", "p5-4", "p1-0", "p0-2"), got);
    }

    @Test
    void rejectPublishOverflowNacksConfirms() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "overflow", false, Map.of("x-max-length", 1, "x-overflow", "reject-publish"));
        ch.confirmSelect();
        ch.basicPublish("", q, null, utf8("fits"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        ch.basicPublish("", q, null, utf8("does not fit"));
        IOException e = assertThrows(IOException.class, () -> ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000));
        assertTrue(e.getMessage().contains("nack"), e.getMessage());
        assertEquals("fits", new String(conn.createChannel().basicGet(q, true).getBody(), StandardCharsets.UTF_8));
    }

    @Test
    void maxLengthDropHeadDeadLettersWithReasonMaxlen() throws Exception {
        Channel ch = conn.createChannel();
        String dlq = queue(ch, "maxlen-dlq", false, null);
        String q = queue(ch, "maxlen", false, Map.of("x-max-length", 2, "x-dead-letter-exchange", "",
                "x-dead-letter-routing-key", dlq));
        ch.confirmSelect();
        for (int i = 1; i <= 3; i++) {
            ch.basicPublish("", q, null, utf8("m" + i));
        }
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
        ch.basicConsume(dlq, true, inbox(ch, inbox));
        Delivery d = take(inbox, "the dropped head");
        assertEquals("m1", new String(d.body(), StandardCharsets.UTF_8));
        Map<?, ?> death = (Map<?, ?>) ((List<?>) d.props().getHeaders().get("x-death")).get(0);
        assertEquals("maxlen", str(death.get("reason")));
        assertEquals(2, ch.queueDeclarePassive(q).getMessageCount());
    }

    @Test
    void singleActiveConsumerAndConsumerPriorities() throws Exception {
        Channel ch = conn.createChannel();
        String q = queue(ch, "sac", false, Map.of("x-single-active-consumer", true));
        BlockingQueue<Delivery> first = new LinkedBlockingQueue<>();
        BlockingQueue<Delivery> second = new LinkedBlockingQueue<>();
        String t1 = ch.basicConsume(q, true, inbox(ch, first));
        Channel ch2 = conn.createChannel();
        ch2.basicConsume(q, true, inbox(ch2, second));
        ch.confirmSelect();
        for (int i = 0; i < 3; i++) {
            ch.basicPublish("", q, null, utf8("s" + i));
        }
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        for (int i = 0; i < 3; i++) {
            assertEquals("s" + i, new String(take(first, "active consumer delivery").body(), StandardCharsets.UTF_8));
        }
        assertTrue(second.isEmpty(), "the second consumer is not active");
        ch.basicCancel(t1); // the second becomes active
        ch.basicPublish("", q, null, utf8("after"));
        assertEquals("after", new String(take(second, "delivery to the new active consumer").body(),
                StandardCharsets.UTF_8));
    }

    @Test
    void missingVhostIs530OnConnectionOpen() throws Exception {
        ConnectionFactory f = factory();
        f.setAutomaticRecoveryEnabled(false);
        String vhost = unique("no-such-vhost");
        f.setVirtualHost(vhost);
        IOException e = assertThrows(IOException.class, f::newConnection);
        ShutdownSignalException sse = shutdownOf(e);
        AMQP.Connection.Close close = (AMQP.Connection.Close) sse.getReason();
        assertEquals(530, close.getReplyCode());
        assertEquals("NOT_ALLOWED - vhost " + vhost + " not found", close.getReplyText());
        assertEquals(10, close.getClassId());
        assertEquals(40, close.getMethodId());
    }

    @Test
    void noWaitDeclaresBindsAndDeletes() throws Exception {
        Channel ch = conn.createChannel();
        String x = unique("nowait-x");
        String q = unique("nowait-q");
        ch.exchangeDeclareNoWait(x, "direct", false, false, false, null);
        ch.queueDeclareNoWait(q, false, false, false, Map.of("x-max-length", 10));
        ch.queueBindNoWait(q, x, "k", null);
        exchanges.add(x);
        queues.add(q);
        ch.confirmSelect();
        ch.basicPublish(x, "k", null, utf8("nowait"));
        ch.waitForConfirmsOrDie(WAIT_SECONDS * 1000);
        assertEquals("nowait", new String(ch.basicGet(q, true).getBody(), StandardCharsets.UTF_8));

        // An error on a no-wait method still closes the channel, asynchronously.
        BlockingQueue<ShutdownSignalException> closed = new LinkedBlockingQueue<>();
        ch.addShutdownListener(closed::add);
        ch.queueDeclareNoWait(q, false, false, false, Map.of("x-max-length", 11));
        AMQP.Channel.Close close = (AMQP.Channel.Close) take(closed, "channel.close").getReason();
        assertEquals(406, close.getReplyCode());
        assertEquals("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '" + q
                + "' in vhost '/': received '11' but current is '10'", close.getReplyText());

        Channel ch2 = conn.createChannel();
        ch2.queueUnbind(q, x, "k"); // queue.unbind has no no-wait flag
        ch2.queueDeleteNoWait(q, false, false);
        ch2.exchangeDeleteNoWait(x, false);
        // A synchronous round trip on the same channel orders the deletions before it.
        IOException e = assertThrows(IOException.class, () -> ch2.queueDeclarePassive(q));
        assertEquals(404, ((AMQP.Channel.Close) shutdownOf(e).getReason()).getReplyCode());
        Channel ch3 = conn.createChannel();
        IOException e2 = assertThrows(IOException.class, () -> ch3.exchangeDeclarePassive(x));
        assertEquals(404, ((AMQP.Channel.Close) shutdownOf(e2).getReason()).getReplyCode());
        queues.remove(q);
        exchanges.remove(x);
    }

    /** Consumes exactly n bodies from q, then checks that the queue is empty. */
    List<String> drain(Channel ch, String q, int n) throws Exception {
        BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
        String tag = ch.basicConsume(q, true, inbox(ch, inbox));
        List<String> bodies = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            bodies.add(new String(take(inbox, q + " delivery " + (i + 1)).body(), StandardCharsets.UTF_8));
        }
        ch.basicCancel(tag);
        assertEquals(0, ch.queueDeclarePassive(q).getMessageCount());
        assertTrue(inbox.isEmpty(), "more deliveries than expected: " + inbox);
        return bodies;
    }
}
