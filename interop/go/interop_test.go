// The RabbitMQ Go client (github.com/rabbitmq/amqp091-go) against the broker named by AMQP_URL.
// Every wait for an event is bounded (5 s); `go test -timeout` bounds the whole run. Names are
// unique per run: interop-go-WHAT-PID-RANDOM. The one fixed wait (300 ms) only asserts that
// something does not happen (no delivery beyond the prefetch window).
package interop

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	wait  = 5 * time.Second
	quiet = 300 * time.Millisecond
)

func init() { rand.Seed(time.Now().UnixNano()) }

func unique(what string) string {
	return fmt.Sprintf("interop-go-%s-%d-%08x", what, os.Getpid(), rand.Uint32())
}

func dial(t *testing.T) *amqp.Connection {
	t.Helper()
	url := os.Getenv("AMQP_URL")
	if url == "" {
		t.Fatalf("AMQP_URL must name the broker, e.g. amqp://guest:guest@127.0.0.1:5672/%%2f")
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func channel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return ch
}

// declareQueue declares a uniquely named queue and deletes it (on a fresh channel) when the test ends.
func declareQueue(t *testing.T, conn *amqp.Connection, ch *amqp.Channel, what string, args amqp.Table) string {
	t.Helper()
	name := unique(what)
	q, err := ch.QueueDeclare(name, false, false, false, false, args)
	if err != nil {
		t.Fatalf("queue.declare %s: %v", name, err)
	}
	if q.Name != name || q.Messages != 0 || q.Consumers != 0 {
		t.Fatalf("declare-ok %+v", q)
	}
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			c.QueueDelete(name, false, false, false)
			c.Close()
		}
	})
	return name
}

func declareExchange(t *testing.T, conn *amqp.Connection, ch *amqp.Channel, what, kind string) string {
	t.Helper()
	name := unique(what)
	if err := ch.ExchangeDeclare(name, kind, false, false, false, false, nil); err != nil {
		t.Fatalf("exchange.declare %s: %v", name, err)
	}
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			c.ExchangeDelete(name, false, false)
			c.Close()
		}
	})
	return name
}

func publish(t *testing.T, ch *amqp.Channel, exchange, key string, mandatory bool, msg amqp.Publishing) {
	t.Helper()
	if err := ch.Publish(exchange, key, mandatory, false, msg); err != nil {
		t.Fatalf("publish to %q/%q: %v", exchange, key, err)
	}
}

// confirming puts ch in confirm mode and returns a function that waits for the next n
// confirmations and fails unless all are acks. Queue counts and basic.get are only certain for
// confirmed publishes: RabbitMQ may answer a passive declare ahead of deliveries still on their
// way to the queue.
func confirming(t *testing.T, ch *amqp.Channel) func(n int) {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm.select: %v", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 64))
	return func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if c := take(t, confirms, "publisher confirm"); !c.Ack {
				t.Fatalf("publish %d nacked", c.DeliveryTag)
			}
		}
	}
}

func take[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatalf("channel closed while waiting for %s", what)
		}
		return v
	case <-time.After(wait):
		t.Fatalf("timed out after %v waiting for %s", wait, what)
	}
	panic("unreachable")
}

func messageCount(t *testing.T, ch *amqp.Channel, q string) int {
	t.Helper()
	info, err := ch.QueueInspect(q) // passive declare: also orders earlier publishes before it
	if err != nil {
		t.Fatalf("passive declare %s: %v", q, err)
	}
	return info.Messages
}

// ------------------------------------------------------------------------------------------

func TestConnectServerProperties(t *testing.T) {
	conn := dial(t)
	if got := conn.Properties["product"]; got != "RabbitMQ" {
		t.Errorf("product = %v", got)
	}
	if v, _ := conn.Properties["version"].(string); !strings.HasPrefix(v, "3.") {
		t.Errorf("version = %q", v)
	}
	caps, _ := conn.Properties["capabilities"].(amqp.Table)
	for _, c := range []string{"publisher_confirms", "basic.nack", "consumer_cancel_notify", "connection.blocked"} {
		if caps[c] != true {
			t.Errorf("capability %s missing", c)
		}
	}
	// NotifyBlocked can be registered (triggering an alarm is out of scope).
	conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	if conn.Config.ChannelMax != 2047 {
		t.Errorf("negotiated channel_max = %d, want the client's 2047", conn.Config.ChannelMax)
	}
	if conn.Config.Heartbeat != 10*time.Second {
		t.Errorf("negotiated heartbeat = %v, want the client's 10s", conn.Config.Heartbeat)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	if err := conn.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err, ok := <-closed; ok && err != nil {
		t.Errorf("a clean close reported %v", err)
	}
	if !conn.IsClosed() {
		t.Error("connection still open after Close")
	}
}

func TestConsumeManualAckWithQos(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q := declareQueue(t, conn, ch, "prefetch", nil)
	for i := 1; i <= 5; i++ {
		publish(t, ch, "", q, false, amqp.Publishing{Body: []byte(fmt.Sprintf("m%d", i))})
	}
	if err := ch.Qos(2, 0, false); err != nil {
		t.Fatalf("qos: %v", err)
	}
	deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	d1 := take(t, deliveries, "delivery 1")
	d2 := take(t, deliveries, "delivery 2")
	if !strings.HasPrefix(d1.ConsumerTag, "ctag-") {
		// amqp091-go generates its own tag (ctag-<cmd>-<n>) and the broker must keep it.
		t.Errorf("consumer tag %q", d1.ConsumerTag)
	}
	if d1.DeliveryTag != 1 || d2.DeliveryTag != 2 || string(d1.Body) != "m1" || d1.Exchange != "" ||
		d1.RoutingKey != q || d1.Redelivered {
		t.Fatalf("d1 %+v d2 tag %d", d1, d2.DeliveryTag)
	}
	select { // fixed wait: nothing beyond the prefetch window may arrive
	case d := <-deliveries:
		t.Fatalf("delivery %d beyond prefetch 2", d.DeliveryTag)
	case <-time.After(quiet):
	}
	if err := d1.Ack(false); err != nil {
		t.Fatal(err)
	}
	d3 := take(t, deliveries, "delivery 3")
	if d3.DeliveryTag != 3 {
		t.Fatalf("tag %d", d3.DeliveryTag)
	}
	if err := d3.Ack(true); err != nil { // settles 2 and 3
		t.Fatal(err)
	}
	d4 := take(t, deliveries, "delivery 4")
	d5 := take(t, deliveries, "delivery 5")
	if d4.DeliveryTag != 4 || d5.DeliveryTag != 5 || string(d5.Body) != "m5" {
		t.Fatalf("tags %d %d", d4.DeliveryTag, d5.DeliveryTag)
	}
	if err := d5.Ack(true); err != nil {
		t.Fatal(err)
	}
	if err := ch.Cancel(d1.ConsumerTag, false); err != nil {
		t.Fatal(err)
	}
	if n := messageCount(t, ch, q); n != 0 {
		t.Fatalf("%d left after acking all", n)
	}
}

func TestConfirmsWithNotifyPublish(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q := declareQueue(t, conn, ch, "confirms", nil)
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm.select: %v", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 32))
	for i := 0; i < 20; i++ {
		publish(t, ch, "", q, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("c")})
	}
	publish(t, ch, "", unique("absent"), false, amqp.Publishing{Body: []byte("unroutable, not mandatory")})
	// NotifyPublish hands out one confirmation per publish, in order, even for multiple acks.
	for want := uint64(1); want <= 21; want++ {
		c := take(t, confirms, fmt.Sprintf("confirm %d", want))
		if c.DeliveryTag != want || !c.Ack {
			t.Fatalf("confirmation %+v, want ack of %d", c, want)
		}
	}
	if n := messageCount(t, ch, q); n != 20 {
		t.Fatalf("%d queued", n)
	}
}

func TestMandatoryReturnWithNotifyReturn(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	x := declareExchange(t, conn, ch, "mandatory", "direct")
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	publish(t, ch, x, "nowhere", true, amqp.Publishing{
		MessageId: "lost", Headers: amqp.Table{"h": int32(1)}, Body: []byte("unroutable"),
	})
	r := take(t, returns, "basic.return")
	if r.ReplyCode != 312 || r.ReplyText != "NO_ROUTE" || r.Exchange != x || r.RoutingKey != "nowhere" ||
		r.MessageId != "lost" || r.Headers["h"] != int32(1) || string(r.Body) != "unroutable" {
		t.Fatalf("return %+v", r)
	}
	if c := take(t, confirms, "confirm"); !c.Ack || c.DeliveryTag != 1 {
		t.Fatalf("confirmation %+v", c)
	}
}

func TestGetAndAck(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q := declareQueue(t, conn, ch, "get", nil)
	confirmed := confirming(t, ch)
	publish(t, ch, "", q, false, amqp.Publishing{MessageId: "a", Body: []byte("one")})
	publish(t, ch, "", q, false, amqp.Publishing{Body: []byte("two")})
	confirmed(2)
	if n := messageCount(t, ch, q); n != 2 {
		t.Fatalf("%d queued", n)
	}
	m, ok, err := ch.Get(q, false)
	if err != nil || !ok {
		t.Fatalf("get: ok=%v err=%v", ok, err)
	}
	if m.MessageCount != 1 || m.DeliveryTag != 1 || m.Redelivered || m.Exchange != "" || m.RoutingKey != q ||
		m.MessageId != "a" || string(m.Body) != "one" {
		t.Fatalf("get-ok %+v", m)
	}
	if err := m.Ack(false); err != nil {
		t.Fatal(err)
	}
	m2, ok, err := ch.Get(q, false)
	if err != nil || !ok || m2.MessageCount != 0 || string(m2.Body) != "two" {
		t.Fatalf("second get: %+v ok=%v err=%v", m2, ok, err)
	}
	if err := m2.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	m3, ok, err := ch.Get(q, false)
	if err != nil || !ok || !m3.Redelivered || string(m3.Body) != "two" {
		t.Fatalf("requeued get: %+v ok=%v err=%v", m3, ok, err)
	}
	if err := m3.Reject(false); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ch.Get(q, false); ok || err != nil {
		t.Fatalf("want get-empty, got ok=%v err=%v", ok, err)
	}
}

func TestHeadersTableRoundTrip(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q := declareQueue(t, conn, ch, "headers", nil)
	ts := time.Unix(1700000000, 0)
	headers := amqp.Table{
		"string":  "hé llo",
		"int32":   int32(-42),
		"int64":   int64(1) << 40,
		"int16":   int16(300),
		"int8":    int8(-5),
		"uint8":   byte(200),
		"float32": float32(1.5),
		"float64": 2.25,
		"bool":    true,
		"decimal": amqp.Decimal{Scale: 2, Value: 12345},
		"time":    ts,
		"bytes":   []byte{0, 1, 0xff},
		"array":   []interface{}{"a", int32(1), false, amqp.Table{"k": "v"}},
		"nested":  amqp.Table{"inner": "value", "deeper": amqp.Table{"n": int32(7)}},
		"void":    nil,
	}
	pub := amqp.Publishing{
		ContentType: "application/json", ContentEncoding: "utf-8", Headers: headers,
		DeliveryMode: amqp.Persistent, Priority: 4, CorrelationId: "corr-1", ReplyTo: "reply-queue",
		Expiration: "60000", MessageId: "msg-1", Timestamp: ts, Type: "order.created",
		UserId: "guest", AppId: "interop-go", Body: []byte(`{"ok":true}`),
	}
	confirmed := confirming(t, ch)
	publish(t, ch, "", q, false, pub)
	confirmed(1)
	m, ok, err := ch.Get(q, true)
	if err != nil || !ok {
		t.Fatalf("get: ok=%v err=%v", ok, err)
	}
	if !reflect.DeepEqual(m.Headers, headers) {
		t.Errorf("headers\n got %#v\nwant %#v", m.Headers, headers)
	}
	if m.ContentType != pub.ContentType || m.ContentEncoding != pub.ContentEncoding ||
		m.DeliveryMode != 2 || m.Priority != 4 || m.CorrelationId != "corr-1" || m.ReplyTo != "reply-queue" ||
		m.Expiration != "60000" || m.MessageId != "msg-1" || !m.Timestamp.Equal(ts) ||
		m.Type != "order.created" || m.UserId != "guest" || m.AppId != "interop-go" ||
		string(m.Body) != `{"ok":true}` {
		t.Errorf("properties %+v", m)
	}
}

func TestChannelError406ViaNotifyClose(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q := declareQueue(t, conn, ch, "inequivalent", amqp.Table{"x-message-ttl": int32(1000)})
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	_, err := ch.QueueDeclare(q, false, false, false, false, amqp.Table{"x-message-ttl": int32(2000)})
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) {
		t.Fatalf("redeclare returned %v, want an *amqp.Error", err)
	}
	want := "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '" + q +
		"' in vhost '/': received '2000' but current is '1000'"
	if amqpErr.Code != 406 || amqpErr.Reason != want || !amqpErr.Server {
		t.Fatalf("error %+v", amqpErr)
	}
	e := take(t, closed, "NotifyClose")
	if e == nil || e.Code != 406 || e.Reason != want {
		t.Fatalf("NotifyClose got %+v", e)
	}
	if conn.IsClosed() {
		t.Fatal("a channel error closed the connection")
	}

	// An ack of an unknown delivery tag is asynchronous: only NotifyClose sees the 406.
	ch2 := channel(t, conn)
	closed2 := ch2.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch2.Ack(99, false); err != nil {
		t.Fatal(err)
	}
	e2 := take(t, closed2, "NotifyClose after an unknown tag")
	if e2 == nil || e2.Code != 406 || e2.Reason != "PRECONDITION_FAILED - unknown delivery tag 99" {
		t.Fatalf("NotifyClose got %+v", e2)
	}
	// The connection is unharmed.
	if n := messageCount(t, channel(t, conn), q); n != 0 {
		t.Fatalf("%d queued", n)
	}
}

func TestTopicExchange(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	x := declareExchange(t, conn, ch, "topic", "topic")
	nyse := declareQueue(t, conn, ch, "nyse", nil)
	all := declareQueue(t, conn, ch, "all", nil)
	if err := ch.QueueBind(nyse, "stock.*.nyse", x, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(all, "stock.#", x, false, nil); err != nil {
		t.Fatal(err)
	}
	confirmed := confirming(t, ch)
	keys := []string{"stock.ibm.nyse", "stock.nyse", "stock", "stock.a.b.nyse", "stock..nyse",
		"bond.ibm.nyse", "stock.msft.nasdaq"}
	for _, k := range keys {
		publish(t, ch, x, k, false, amqp.Publishing{Body: []byte(k)})
	}
	confirmed(len(keys))
	check := func(q string, want []string) {
		t.Helper()
		var got []string
		for {
			m, ok, err := ch.Get(q, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got = append(got, string(m.Body))
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s got %q want %q", q, got, want)
		}
	}
	check(nyse, []string{"stock.ibm.nyse", "stock..nyse"})
	check(all, []string{"stock.ibm.nyse", "stock.nyse", "stock", "stock.a.b.nyse", "stock..nyse", "stock.msft.nasdaq"})
}

func TestDeadLetteringXDeath(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	dlq := declareQueue(t, conn, ch, "dlq", nil)
	src := declareQueue(t, conn, ch, "dl-source", amqp.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
	})
	confirmed := confirming(t, ch)
	publish(t, ch, "", src, false, amqp.Publishing{Body: []byte("reject me")})
	confirmed(1)
	m, ok, err := ch.Get(src, false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if err := m.Reject(false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(dlq, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := take(t, deliveries, "dead-lettered message")
	deaths, ok := d.Headers["x-death"].([]interface{})
	if !ok || len(deaths) != 1 {
		t.Fatalf("x-death %#v", d.Headers["x-death"])
	}
	death := deaths[0].(amqp.Table)
	if death["count"] != int64(1) || death["reason"] != "rejected" || death["queue"] != src ||
		death["exchange"] != "" || !reflect.DeepEqual(death["routing-keys"], []interface{}{src}) {
		t.Fatalf("x-death entry %#v", death)
	}
	if when, ok := death["time"].(time.Time); !ok || time.Since(when).Abs() > time.Minute {
		t.Fatalf("x-death time %#v", death["time"])
	}
	if d.Headers["x-first-death-reason"] != "rejected" || d.Headers["x-first-death-queue"] != src {
		t.Fatalf("headers %#v", d.Headers)
	}
}

func TestServerCancelViaNotifyCancel(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q := unique("cancel-notify")
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	cancels := ch.NotifyCancel(make(chan string, 1))
	deliveries, err := ch.Consume(q, "go-consumer-1", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := channel(t, conn)
	if n, err := other.QueueDelete(q, false, false, false); err != nil || n != 0 {
		t.Fatalf("delete: %d %v", n, err)
	}
	if tag := take(t, cancels, "basic.cancel from the broker"); tag != "go-consumer-1" {
		t.Fatalf("cancelled tag %q", tag)
	}
	select { // the client closes the consumer's delivery channel on cancel
	case _, ok := <-deliveries:
		if ok {
			t.Fatal("unexpected delivery")
		}
	case <-time.After(wait):
		t.Fatal("deliveries channel not closed after basic.cancel")
	}
}

func TestTxCommitRollbackAndPurge(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q := declareQueue(t, conn, ch, "tx", nil)
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", q, false, amqp.Publishing{Body: []byte("rolled back")})
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		publish(t, ch, "", q, false, amqp.Publishing{Body: []byte("committed")})
	}
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	if n, err := ch.QueuePurge(q, false); err != nil || n != 3 {
		t.Fatalf("purge: %d %v", n, err)
	}
}

func TestLargeMessageAndExchangeBinding(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	src := declareExchange(t, conn, ch, "e2e-src", "fanout")
	dst := declareExchange(t, conn, ch, "e2e-dst", "direct")
	if err := ch.ExchangeBind(dst, "", src, false, nil); err != nil {
		t.Fatal(err)
	}
	q := declareQueue(t, conn, ch, "large", nil)
	if err := ch.QueueBind(q, "", dst, false, nil); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 3<<20+17)
	rand.Read(body)
	confirmed := confirming(t, ch)
	publish(t, ch, src, "", false, amqp.Publishing{Body: body})
	confirmed(1)
	m, ok, err := ch.Get(q, true)
	if err != nil || !ok || !reflect.DeepEqual(m.Body, body) || m.Exchange != src {
		t.Fatalf("get: ok=%v err=%v len=%d exchange=%q", ok, err, len(m.Body), m.Exchange)
	}
}

func TestExclusiveQueueOfAnotherConnectionIs405(t *testing.T) {
	owner := dial(t)
	och := channel(t, owner)
	q, err := och.QueueDeclare("", false, true, true, false, nil)
	if err != nil || !strings.HasPrefix(q.Name, "amq.gen-") {
		t.Fatalf("declare: %+v %v", q, err)
	}
	other := dial(t)
	ch := channel(t, other)
	_, err = ch.Consume(q.Name, "", false, false, false, false, nil)
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != 405 || !strings.HasPrefix(amqpErr.Reason,
		"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '"+q.Name+"' in vhost '/'") {
		t.Fatalf("consume from another connection: %v", err)
	}
}

func amqpURL(t *testing.T) amqp.URI {
	t.Helper()
	u, err := amqp.ParseURI(os.Getenv("AMQP_URL"))
	if err != nil {
		t.Fatalf("AMQP_URL: %v", err)
	}
	return u
}

func TestAMQPlainLoginAndVhostRefusal(t *testing.T) {
	u := amqpURL(t)
	conn, err := amqp.DialConfig(u.String(), amqp.Config{
		SASL: []amqp.Authentication{&amqp.AMQPlainAuth{Username: u.Username, Password: u.Password}},
	})
	if err != nil {
		t.Fatalf("AMQPLAIN login: %v", err)
	}
	if conn.Config.SASL[0].Mechanism() != "AMQPLAIN" {
		t.Fatal("not AMQPLAIN")
	}
	conn.Close()

	bad := u
	bad.Vhost = unique("no-such-vhost")
	// The broker closes the connection during connection.open (530); the client reports that
	// as its ErrVhost.
	_, err = amqp.Dial(bad.String())
	if !errors.Is(err, amqp.ErrVhost) {
		t.Fatalf("dial to a missing vhost: %#v", err)
	}
}

func TestFlowAndImmediate(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	if err := ch.Flow(true); err != nil {
		t.Fatalf("channel.flow active=true: %v", err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, ch, "", "anything", false, amqp.Publishing{Body: []byte("x")})
	if err := ch.Publish("", "anything", false, true, amqp.Publishing{Body: []byte("immediate")}); err != nil {
		t.Fatal(err)
	}
	e := take(t, closed, "connection.close")
	if e == nil || e.Code != 540 || e.Reason != "NOT_IMPLEMENTED - immediate=true" {
		t.Fatalf("immediate publish: %+v", e)
	}
}

func TestFlowInactiveIsNotImplemented(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	err := ch.Flow(false)
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != 540 || amqpErr.Reason != "NOT_IMPLEMENTED - active=false" {
		t.Fatalf("channel.flow active=false: %#v", err)
	}
}

func TestHeartbeatOneSecondKeepsIdleConnection(t *testing.T) {
	u := amqpURL(t)
	conn, err := amqp.DialConfig(u.String(), amqp.Config{Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.Config.Heartbeat != time.Second {
		t.Fatalf("negotiated heartbeat %v", conn.Config.Heartbeat)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	// The client drops the connection after 3 missed server heartbeats; idling 3.5 s must not.
	select {
	case e := <-closed:
		t.Fatalf("idle connection closed: %v", e)
	case <-time.After(3500 * time.Millisecond):
	}
	ch := channel(t, conn)
	q := declareQueue(t, conn, ch, "heartbeat", nil)
	if n := messageCount(t, ch, q); n != 0 {
		t.Fatal(n)
	}
}

func TestQosGlobalAndDeferredConfirm(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q1 := declareQueue(t, conn, ch, "global-qos-1", nil)
	q2 := declareQueue(t, conn, ch, "global-qos-2", nil)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{q1, q1, q2, q2} {
		dc, err := ch.PublishWithDeferredConfirm("", q, false, false, amqp.Publishing{Body: []byte(q)})
		if err != nil {
			t.Fatal(err)
		}
		if !dc.Wait() {
			t.Fatalf("publish %d nacked", dc.DeliveryTag)
		}
	}
	// global=true: the window of 3 is shared by both consumers on this channel.
	if err := ch.Qos(3, 0, true); err != nil {
		t.Fatal(err)
	}
	d1, err := ch.Consume(q1, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := ch.Consume(q2, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	var last amqp.Delivery
	timeout := time.After(wait)
	for got < 3 {
		select {
		case last = <-d1:
		case last = <-d2:
		case <-timeout:
			t.Fatalf("only %d deliveries within the shared window", got)
		}
		got++
	}
	select { // fixed wait: the 4th message must wait for an ack
	case d := <-d1:
		t.Fatalf("delivery %d beyond the global window", d.DeliveryTag)
	case d := <-d2:
		t.Fatalf("delivery %d beyond the global window", d.DeliveryTag)
	case <-time.After(quiet):
	}
	if err := last.Ack(true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d1:
	case <-d2:
	case <-time.After(wait):
		t.Fatal("the 4th delivery did not come after the ack")
	}
}

func TestNoWaitDeclareBindConsumeCancel(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	x, q := unique("nowait-x"), unique("nowait-q")
	if err := ch.ExchangeDeclare(x, "topic", false, true, false, true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, false, true, false, true, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "a.#", x, true, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q, "go-nowait", false, false, false, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, ch, x, "a.b.c", false, amqp.Publishing{Body: []byte("nowait")})
	d := take(t, deliveries, "delivery to a no-wait consumer")
	if string(d.Body) != "nowait" || d.ConsumerTag != "go-nowait" || d.RoutingKey != "a.b.c" {
		t.Fatalf("delivery %+v", d)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := ch.Cancel("go-nowait", true); err != nil {
		t.Fatal(err)
	}
	// auto-delete queue: goes with its last consumer; a passive declare (a round trip on the same
	// channel, so after the cancel) then fails with 404, as on RabbitMQ 3.10. (Warren used to
	// answer it from the dying queue: declare-ok with zero counts.)
	_, err = ch.QueueInspect(q)
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != 404 ||
		amqpErr.Reason != "NOT_FOUND - no queue '"+q+"' in vhost '/'" {
		t.Fatalf("auto-delete queue after the last consumer left: %v", err)
	}
}

func TestRedeclareRightAfterNoWaitCancelOfLastConsumer(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	q := unique("redeclare-after-cancel")
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			c.QueueDelete(q, false, false, false)
			c.Close()
		}
	})
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume(q, "go-last", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Cancel("go-last", true); err != nil {
		t.Fatal(err)
	}
	// The cancel auto-deletes the queue; this declare, after it on the same channel, must create a
	// new one that messages then reach (not answer from the queue being deleted).
	declared, err := ch.QueueDeclare(q, false, true, false, false, nil)
	if err != nil || declared.Consumers != 0 || declared.Messages != 0 {
		t.Fatalf("redeclare: %+v %v", declared, err)
	}
	confirmed := confirming(t, ch)
	publish(t, ch, "", q, false, amqp.Publishing{Body: []byte("into the new queue")})
	confirmed(1)
	m, ok, err := ch.Get(q, true)
	if err != nil || !ok || string(m.Body) != "into the new queue" {
		t.Fatalf("get from the redeclared queue: ok=%v err=%v", ok, err)
	}
}
