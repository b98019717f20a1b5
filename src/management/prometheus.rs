//! Prometheus metrics (RabbitMQ's `rabbitmq_prometheus` names, so existing dashboards and
//! alert rules keep working): `/metrics` with node-wide values, `/metrics/per-object` with one
//! series per queue (labels `vhost`, `queue`), and `/metrics/detailed?family=…&vhost=…` with
//! the families asked for, named `rabbitmq_detailed_…` (see [`detailed`]). Served on their own listener
//! (`[prometheus] listen`, default 127.0.0.1:15692, `--metrics-listen`), without
//! authentication, as RabbitMQ does. The text format is written by `prometheus-client`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::broker::Broker;

type Labels = Vec<(String, String)>;

pub fn routes(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(|b: State<Arc<Broker>>| scrape(b, false)))
        .route("/metrics/per-object", get(|b: State<Arc<Broker>>| scrape(b, true)))
        .route("/metrics/detailed", get(detailed))
        .with_state(broker)
}

/// Serve the metrics until the broker shuts down.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let shutdown = broker.shutdown.clone();
    let app = routes(broker);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await {
        tracing::error!(error = %e, "the Prometheus listener stopped");
    }
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

fn plain_counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let f: Family<Labels, Counter> = Family::default();
    f.get_or_create(&vec![("protocol".into(), "amqp091".into())]).inc_by(v);
    r.register(name, help, f);
}

async fn scrape(State(b): State<Arc<Broker>>, per_object: bool) -> impl IntoResponse {
    let mut r = Registry::default();
    let info: Family<Labels, Gauge> = Family::default();
    info.get_or_create(&vec![
        ("rabbitmq_node".into(), "warren@localhost".into()),
        ("rabbitmq_cluster".into(), "warren@localhost".into()),
    ])
    .set(1);
    r.register("rabbitmq_identity_info", "RabbitMQ node & cluster identity info", info);
    let build: Family<Labels, Gauge> = Family::default();
    build
        .get_or_create(&vec![
            ("rabbitmq_version".into(), b.config.amqp.product_version.clone()),
            ("warren_version".into(), env!("CARGO_PKG_VERSION").into()),
        ])
        .set(1);
    r.register("rabbitmq_build_info", "RabbitMQ & Erlang/OTP version info", build);

    let conns = b.connections.snapshot();
    gauge(&mut r, "rabbitmq_connections", "Connections currently open", conns.len() as i64);
    gauge(&mut r, "rabbitmq_channels", "Channels currently open", conns.iter().map(|c| c.channels() as i64).sum());

    // Queue gauges: summed node-wide, or one series per queue.
    let names = [
        ("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers"),
        ("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged"),
        ("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth"),
        ("rabbitmq_queue_consumers", "Consumers on a queue"),
        ("rabbitmq_queue_messages_ready_bytes", "Size in bytes of ready messages"),
        ("rabbitmq_queue_messages_unacked_bytes", "Size in bytes of all unacknowledged messages"),
        ("rabbitmq_queue_messages_bytes", "Size in bytes of ready and unacknowledged messages"),
    ];
    let families: Vec<Family<Labels, Gauge>> = names.iter().map(|_| Family::default()).collect();
    let mut sums = [0i64; 7];
    let (mut queues, mut consumers) = (0i64, 0i64);
    for v in b.vhosts_sorted() {
        let t = v.snapshot();
        for q in t.queues.values() {
            let Some(i) = q.handle.info().await else { continue };
            queues += 1;
            consumers += i.consumers.len() as i64;
            let labels: Labels = vec![("vhost".into(), v.name().into()), ("queue".into(), q.name.clone())];
            let values = [
                i.messages_ready as i64,
                i.messages_unacknowledged as i64,
                (i.messages_ready + i.messages_unacknowledged) as i64,
                i.consumers.len() as i64,
                i.message_bytes_ready as i64,
                i.message_bytes_unacknowledged as i64,
                (i.message_bytes_ready + i.message_bytes_unacknowledged) as i64,
            ];
            for ((f, value), sum) in families.iter().zip(values).zip(sums.iter_mut()) {
                *sum += value;
                if per_object {
                    f.get_or_create(&labels).set(value);
                }
            }
        }
    }
    for (((name, help), f), sum) in names.iter().zip(families).zip(sums) {
        if per_object {
            r.register(*name, *help, f);
        } else {
            gauge(&mut r, name, help, sum);
        }
    }
    gauge(&mut r, "rabbitmq_queues", "Queues available", queues);
    gauge(&mut r, "rabbitmq_consumers", "Consumers currently connected", consumers);

    let s = b.counters.snapshot();
    let routed = s.publish.saturating_sub(s.drop_unroutable + s.return_unroutable);
    for (name, help, v) in [
        ("rabbitmq_global_messages_received", "Total number of messages received from publishers", s.publish),
        ("rabbitmq_global_messages_routed", "Total number of messages routed to queues or streams", routed),
        ("rabbitmq_global_messages_delivered", "Total number of messages delivered to consumers", s.deliver_get()),
        (
            "rabbitmq_global_messages_delivered_consume_manual_ack",
            "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
            s.deliver,
        ),
        (
            "rabbitmq_global_messages_delivered_consume_auto_ack",
            "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
            s.deliver_no_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_get_manual_ack",
            "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
            s.get,
        ),
        (
            "rabbitmq_global_messages_delivered_get_auto_ack",
            "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
            s.get_no_ack,
        ),
        (
            "rabbitmq_global_messages_acknowledged",
            "Total number of message acknowledgements received from consumers",
            s.ack,
        ),
        ("rabbitmq_global_messages_confirmed", "Total number of messages confirmed to publishers", s.confirm),
        ("rabbitmq_global_messages_redelivered", "Total number of messages redelivered to consumers", s.redeliver),
        (
            "rabbitmq_global_messages_unroutable_dropped",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            s.drop_unroutable,
        ),
        (
            "rabbitmq_global_messages_unroutable_returned",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            s.return_unroutable,
        ),
    ] {
        counter(&mut r, name, help, v);
    }
    for (name, help, v) in churn(&s) {
        plain_counter(&mut r, name, help, v);
    }
    let (rss, fds) = super::process_usage();
    gauge(&mut r, "rabbitmq_process_resident_memory_bytes", "Memory used in bytes", rss as i64);
    gauge(&mut r, "rabbitmq_process_open_fds", "Open file descriptors", fds as i64);
    let n = super::node_resources(&b);
    gauge(&mut r, "rabbitmq_process_max_fds", "Open file descriptors limit", n.fd_total as i64);
    gauge(&mut r, "rabbitmq_resident_memory_limit_bytes", "Memory high watermark in bytes", n.mem_limit as i64);
    gauge(&mut r, "rabbitmq_disk_space_available_bytes", "Disk space available in bytes", n.disk_free as i64);
    gauge(
        &mut r,
        "rabbitmq_disk_space_available_limit_bytes",
        "Free disk space low watermark in bytes",
        b.config.storage.disk_free_limit as i64,
    );
    gauge(&mut r, "rabbitmq_erlang_uptime_seconds", "Node uptime", b.started.elapsed().as_secs() as i64);
    gauge(
        &mut r,
        "rabbitmq_alarms_resource_alarm",
        "Whether a memory or disk alarm is in effect (1) or not (0)",
        b.disk_alarm.is_raised() as i64,
    );

    exposition(&r)
}

fn exposition(r: &Registry) -> impl IntoResponse + use<> {
    let mut text = String::new();
    if encode(&mut text, r).is_err() {
        text.clear();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

/// RabbitMQ's `connection_churn_metrics` (names without `_total`: the encoder adds it).
fn churn(s: &crate::stats::Snapshot) -> [(&'static str, &'static str, u64); 7] {
    [
        ("rabbitmq_connections_opened", "Total number of connections opened", s.connection_created),
        ("rabbitmq_connections_closed", "Total number of connections closed or terminated", s.connection_closed),
        ("rabbitmq_channels_opened", "Total number of channels opened", s.channel_created),
        ("rabbitmq_channels_closed", "Total number of channels closed", s.channel_closed),
        ("rabbitmq_queues_declared", "Total number of queues declared", s.queue_declared),
        ("rabbitmq_queues_created", "Total number of queues created", s.queue_created),
        ("rabbitmq_queues_deleted", "Total number of queues deleted", s.queue_deleted),
    ]
}

/// One labelled metric family being filled.
struct Fam<M> {
    name: &'static str,
    help: &'static str,
    family: Family<Labels, M>,
}

fn fam<M: Default>(name: &'static str, help: &'static str) -> Fam<M> {
    Fam { name, help, family: Family::default() }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Register `fams` under RabbitMQ's `rabbitmq_detailed_` prefix.
fn register<
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
>(
    r: &mut Registry,
    fams: Vec<Fam<M>>,
) where
    Family<Labels, M>: prometheus_client::encoding::EncodeMetric,
{
    for f in fams {
        r.register(format!("rabbitmq_detailed_{}", f.name), f.help, f.family);
    }
}

/// `/metrics/detailed`: only the families named by `family=` (repeatable), queue families only
/// for the vhosts named by `vhost=` (all without one). Families Warren has no data for
/// (Erlang internals, Raft) are answered with nothing, as RabbitMQ does for unknown ones.
async fn detailed(State(b): State<Arc<Broker>>, RawQuery(q): RawQuery) -> impl IntoResponse {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
    let wanted = |f: &str| pairs.iter().any(|(k, v)| k == "family" && v == f);
    let vhost_filter: Vec<&str> = pairs.iter().filter(|(k, _)| k == "vhost").map(|(_, v)| v.as_str()).collect();
    let mut r = Registry::default();
    if wanted("connection_churn_metrics") {
        let s = b.counters.snapshot();
        for (name, help, v) in churn(&s) {
            plain_counter(&mut r, &name.replacen("rabbitmq_", "rabbitmq_detailed_", 1), help, v);
        }
    }
    let queue_families = ["queue_coarse_metrics", "queue_consumer_count", "queue_metrics", "queue_delivery_metrics"];
    if queue_families.iter().any(|f| wanted(f)) {
        queue_metrics(&b, &mut r, &vhost_filter, &wanted).await;
    }
    if wanted("exchange_metrics") || wanted("exchange_names") || wanted("exchange_bindings") {
        let published =
            fam::<Counter>("exchange_messages_published", "Total number of messages published into an exchange");
        let names = fam::<Gauge>(
            "exchange_name",
            "Enumerates exchanges without any additional info. This value is cluster-wide. A cheaper alternative to `exchange_bindings`",
        );
        let bindings =
            fam::<Gauge>("exchange_bindings", "Number of bindings for an exchange. This value is cluster-wide.");
        for v in b.vhosts_sorted() {
            let t = v.snapshot();
            for (name, x) in &t.exchanges {
                let kind = x.declared_type.to_string();
                let l = labels(&[("vhost", v.name()), ("exchange", name)]);
                names.family.get_or_create(&labels(&[("vhost", v.name()), ("exchange", name), ("type", &kind)])).set(1);
                bindings
                    .family
                    .get_or_create(&labels(&[("vhost", v.name()), ("exchange", name), ("type", &kind)]))
                    .set(x.binding_count() as i64);
                let (i, _) = v.exchange_counts.get(name);
                published.family.get_or_create(&l).inc_by(i);
            }
        }
        if wanted("exchange_metrics") {
            register(&mut r, vec![published]);
        }
        if wanted("exchange_names") {
            register(&mut r, vec![names]);
        }
        if wanted("exchange_bindings") {
            register(&mut r, vec![bindings]);
        }
    }
    if wanted("vhost_status") {
        let f = fam::<Gauge>("vhost_status", "Whether a given vhost is running");
        for v in b.vhosts_sorted() {
            f.family.get_or_create(&labels(&[("vhost", v.name())])).set(1);
        }
        register(&mut r, vec![f]);
    }
    if [
        "connection_coarse_metrics",
        "connection_metrics",
        "channel_metrics",
        "channel_queue_metrics",
        "channel_exchange_metrics",
    ]
    .iter()
    .any(|f| wanted(f))
    {
        connection_metrics(&b, &mut r, &wanted).await;
    }
    exposition(&r)
}

async fn queue_metrics(b: &Broker, r: &mut Registry, vhosts: &[&str], wanted: &(dyn Fn(&str) -> bool + Sync)) {
    let g = fam::<Gauge>;
    let c = fam::<Counter>;
    let mut coarse = vec![
        g("queue_messages_ready", "Messages ready to be delivered to consumers"),
        g("queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged"),
        g("queue_messages", "Sum of ready and unacknowledged messages - total queue depth"),
    ];
    let count = vec![g("queue_consumers", "Consumers on a queue")];
    let mut metrics = vec![
        g("queue_consumers", "Consumers on a queue"),
        g("queue_messages_ram", "Ready and unacknowledged messages stored in memory"),
        g("queue_messages_ram_bytes", "Size of ready and unacknowledged messages stored in memory"),
        g("queue_messages_ready_ram", "Ready messages stored in memory"),
        g("queue_messages_unacked_ram", "Unacknowledged messages stored in memory"),
        g("queue_messages_persistent", "Persistent messages"),
        g("queue_messages_persistent_bytes", "Size in bytes of persistent messages"),
        g("queue_messages_bytes", "Size in bytes of ready and unacknowledged messages"),
        g("queue_messages_ready_bytes", "Size in bytes of ready messages"),
        g("queue_messages_unacked_bytes", "Size in bytes of all unacknowledged messages"),
        g("queue_messages_paged_out", "Messages paged out to disk"),
        g("queue_messages_paged_out_bytes", "Size in bytes of messages paged out to disk"),
        g("queue_head_message_timestamp", "Timestamp of the first message in the queue, if any"),
    ];
    let mut delivery = vec![
        c(
            "queue_get_ack",
            "Total number of messages fetched from a queue with basic.get in manual acknowledgement mode",
        ),
        c(
            "queue_get",
            "Total number of messages fetched from a queue with basic.get in automatic acknowledgement mode",
        ),
        c(
            "queue_messages_delivered_ack",
            "Total number of messages delivered from a queue to consumers in manual acknowledgement mode",
        ),
        c(
            "queue_messages_delivered",
            "Total number of messages delivered from a queue to consumers in automatic acknowledgement mode",
        ),
        c("queue_messages_redelivered", "Total number of messages redelivered from a queue to consumers"),
        c("queue_messages_acked", "Total number of messages acknowledged by consumers on a queue"),
        c("queue_get_empty", "Total number of times basic.get operations fetched no message on a queue"),
    ];
    for v in b.vhosts_sorted().into_iter().filter(|v| vhosts.is_empty() || vhosts.contains(&v.name())) {
        let t = v.snapshot();
        for q in t.queues.values() {
            let Some(i) = q.handle.info().await else { continue };
            let l = labels(&[("vhost", v.name()), ("queue", &q.name)]);
            let (ready, unacked) = (i.messages_ready as i64, i.messages_unacknowledged as i64);
            let bytes = (i.message_bytes_ready + i.message_bytes_unacknowledged) as i64;
            let (paged, paged_bytes) = (i.paged_out.0 as i64, i.paged_out.1 as i64);
            for (f, x) in coarse.iter_mut().zip([ready, unacked, ready + unacked]) {
                f.family.get_or_create(&l).set(x);
            }
            count[0].family.get_or_create(&l).set(i.consumers.len() as i64);
            let values = [
                i.consumers.len() as i64,
                (ready + unacked - paged).max(0),
                (bytes - paged_bytes).max(0),
                (ready - paged).max(0),
                unacked,
                i.persistent.0 as i64,
                i.persistent.1 as i64,
                bytes,
                i.message_bytes_ready as i64,
                i.message_bytes_unacknowledged as i64,
                paged,
                paged_bytes,
                i.head_message_timestamp.unwrap_or(0) as i64,
            ];
            for (f, x) in metrics.iter_mut().zip(values) {
                f.family.get_or_create(&l).set(x);
            }
            let k = i.counters;
            for (f, x) in delivery.iter_mut().zip([
                k.get,
                k.get_no_ack,
                k.deliver,
                k.deliver_no_ack,
                k.redeliver,
                k.ack,
                k.get_empty,
            ]) {
                f.family.get_or_create(&l).inc_by(x);
            }
        }
    }
    for (name, fams) in [("queue_coarse_metrics", coarse), ("queue_consumer_count", count), ("queue_metrics", metrics)]
    {
        if wanted(name) {
            register(r, fams);
        }
    }
    if wanted("queue_delivery_metrics") {
        register(r, delivery);
    }
}

/// Connection and channel families; both are labelled `channel` with the object's name, as
/// RabbitMQ labels them with the process.
async fn connection_metrics(b: &Broker, r: &mut Registry, wanted: &(dyn Fn(&str) -> bool + Sync)) {
    let (g, c) = (fam::<Gauge>, fam::<Counter>);
    let coarse = vec![
        c("connection_incoming_bytes", "Total number of bytes received on a connection"),
        c("connection_outgoing_bytes", "Total number of bytes sent on a connection"),
    ];
    let packets = vec![
        c("connection_incoming_packets", "Total number of packets received on a connection"),
        c("connection_outgoing_packets", "Total number of packets sent on a connection"),
    ];
    let conn = vec![
        g("connection_pending_packets", "Number of packets waiting to be sent on a connection"),
        g("connection_channels", "Channels on a connection"),
    ];
    let chan = vec![
        g("channel_consumers", "Consumers on a channel"),
        g("channel_messages_unacked", "Delivered but not yet acknowledged messages"),
        g("channel_messages_unconfirmed", "Published but not yet confirmed messages"),
        g("channel_messages_uncommitted", "Messages received in a transaction but not yet committed"),
        g("channel_acks_uncommitted", "Message acknowledgements in a transaction not yet committed"),
        g("consumer_prefetch", "Limit of unacknowledged messages for each consumer"),
        g("channel_prefetch", "Deprecated and will be removed in a future version"),
    ];
    let chan_x = vec![
        c("channel_messages_published", "Total number of messages published into an exchange on a channel"),
        c(
            "channel_messages_confirmed",
            "Total number of messages published into an exchange and confirmed on the channel",
        ),
        c(
            "channel_messages_unroutable_returned",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
        ),
        c(
            "channel_messages_unroutable_dropped",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
        ),
    ];
    let chan_q = vec![
        c("channel_get_ack", "Total number of messages fetched with basic.get in manual acknowledgement mode"),
        c("channel_get", "Total number of messages fetched with basic.get in automatic acknowledgement mode"),
        c(
            "channel_messages_delivered_ack",
            "Total number of messages delivered to consumers in manual acknowledgement mode",
        ),
        c(
            "channel_messages_delivered",
            "Total number of messages delivered to consumers in automatic acknowledgement mode",
        ),
        c("channel_messages_redelivered", "Total number of messages redelivered to consumers"),
        c("channel_messages_acked", "Total number of messages acknowledged by consumers"),
        c("channel_get_empty", "Total number of times basic.get operations fetched no message"),
    ];
    let conns = b.connections.snapshot();
    let want_channels =
        ["channel_metrics", "channel_queue_metrics", "channel_exchange_metrics"].iter().any(|f| wanted(f));
    for x in &conns {
        let name = x.name();
        let l = labels(&[("channel", &name)]);
        let [recv_oct, recv_cnt, send_oct, send_cnt] = x.details.octets.get();
        coarse[0].family.get_or_create(&l).inc_by(recv_oct);
        coarse[1].family.get_or_create(&l).inc_by(send_oct);
        packets[0].family.get_or_create(&l).inc_by(recv_cnt);
        packets[1].family.get_or_create(&l).inc_by(send_cnt);
        conn[0].family.get_or_create(&l).set(0);
        conn[1].family.get_or_create(&l).set(x.channels() as i64);
        if !want_channels {
            continue;
        }
        for ch in x.channels_summary().await.unwrap_or_default() {
            let l = labels(&[("channel", &format!("{name} ({})", ch.number))]);
            let gauges = [
                ch.consumer_count as i64,
                ch.messages_unacknowledged as i64,
                ch.messages_unconfirmed as i64,
                0,
                0,
                ch.prefetch_count as i64,
                ch.global_prefetch_count as i64,
            ];
            for (f, v) in chan.iter().zip(gauges) {
                f.family.get_or_create(&l).set(v);
            }
            let k = ch.counters;
            for (f, v) in chan_x.iter().zip([k.publish, k.confirm, k.return_unroutable, k.drop_unroutable]) {
                f.family.get_or_create(&l).inc_by(v);
            }
            for (f, v) in
                chan_q.iter().zip([k.get, k.get_no_ack, k.deliver, k.deliver_no_ack, k.redeliver, k.ack, k.get_empty])
            {
                f.family.get_or_create(&l).inc_by(v);
            }
        }
    }
    if wanted("connection_coarse_metrics") {
        register(r, coarse);
    }
    if wanted("connection_metrics") {
        register(r, packets);
        register(r, conn);
    }
    if wanted("channel_metrics") {
        register(r, chan);
    }
    if wanted("channel_exchange_metrics") {
        register(r, chan_x);
    }
    if wanted("channel_queue_metrics") {
        register(r, chan_q);
    }
}
