//! Prometheus metrics (RabbitMQ's `rabbitmq_prometheus` names, so existing dashboards and
//! alert rules keep working): `/metrics` with node-wide values, `/metrics/per-object` with one
//! series per queue (labels `vhost`, `queue`). Served on their own listener
//! (`[prometheus] listen`, default 127.0.0.1:15692, `--metrics-listen`), without
//! authentication, as RabbitMQ does. The text format is written by `prometheus-client`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
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
    let (rss, fds) = super::process_usage();
    gauge(&mut r, "rabbitmq_process_resident_memory_bytes", "Memory used in bytes", rss as i64);
    gauge(&mut r, "rabbitmq_process_open_fds", "Open file descriptors", fds as i64);
    gauge(&mut r, "rabbitmq_erlang_uptime_seconds", "Node uptime", b.started.elapsed().as_secs() as i64);
    gauge(
        &mut r,
        "rabbitmq_alarms_resource_alarm",
        "Whether a memory or disk alarm is in effect (1) or not (0)",
        b.disk_alarm.is_raised() as i64,
    );

    let mut text = String::new();
    if encode(&mut text, &r).is_err() {
        text.clear();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}
