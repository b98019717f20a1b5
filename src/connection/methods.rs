//! Channel-level method handlers: one function per AMQP method, called by the connection
//! task. Each returns an [`AmqpError`] for the connection to turn into the right close; the
//! class and method ids are attached by [`Connection::on_channel_method`].
//!
//! Publishing: `basic.publish` starts the channel's content assembler; the completed message
//! is validated, routed against the vhost's topology snapshot, and added to this turn's
//! per-queue batch ([`Connection::push_publish`]).

use std::sync::Arc;

use amq_protocol::protocol::{access, basic, channel, confirm, exchange, queue};
use bytes::Bytes;
use tokio::sync::oneshot;

use super::Connection;
use crate::broker::names;
use crate::broker::vhost::{ExchangeDeclare, QueueDeclare};
use crate::channel::assembler::{Content, PublishMethod, Step};
use crate::channel::unacked::Pending;
use crate::channel::{Channel, ChannelConsumer, ChannelPhase};
use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::protocol::codec::ContentHeader;
use crate::protocol::encode::{self, Outbound};
use crate::protocol::{AMQPClass, CLASS_BASIC};
use crate::queue::{ConfirmTo, ConsumerSpec, Outcome, Publish, QueueCmd, QueueHandle};

/// A content frame for a channel's assembler.
// Frames and content steps are moved, not stored: boxing the header would add an allocation
// per published message to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum ContentFrame {
    Header(ContentHeader),
    Body(Bytes),
}

pub fn send_cancel_ok(out: &mut Outbound, channel: u16, tag: &str) {
    let m = AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk { consumer_tag: tag.into() }));
    encode::method(out, channel, &m);
}

/// Server-initiated `basic.cancel` (queue deleted), no reply expected.
pub fn send_server_cancel(out: &mut Outbound, channel: u16, tag: &str) {
    let m = AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel { consumer_tag: tag.into(), nowait: true }));
    encode::method(out, channel, &m);
}

fn unimplemented() -> AmqpError {
    AmqpError::command_invalid("unimplemented method")
}

impl Connection {
    fn reply(&mut self, ch: u16, m: AMQPClass) {
        encode::method(&mut self.out, ch, &m);
    }

    fn open_channel(&mut self, ch: u16) -> Result<&mut Channel, AmqpError> {
        match self.channels.get_mut(&ch) {
            Some(c) if c.phase == ChannelPhase::Open => Ok(c),
            _ => Err(AmqpError::channel_error("expected 'channel.open'")),
        }
    }

    /// A method frame on channel `ch` (not 0).
    pub(super) async fn on_channel_method(&mut self, ch: u16, m: AMQPClass) -> AmqpResult<()> {
        let (class_id, method_id) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let Some(state) = self.channels.get(&ch) else {
            if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = m {
                // Errors here are connection-level (channel_max), reported at 0/0 as RabbitMQ.
                return self.channel_open(ch);
            }
            return Err(AmqpError::channel_error("expected 'channel.open'").on(class_id, method_id));
        };
        if state.phase == ChannelPhase::Closing {
            // Everything is dropped until the client acknowledges our channel.close.
            match m {
                // A close crossing ours: answer it, and still wait for our close-ok.
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    self.reply(ch, AMQPClass::Channel(channel::AMQPMethod::CloseOk(Default::default())));
                }
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&ch);
                }
                // A client that took our close-ok for the end of the channel may reopen it.
                AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                    self.channels.remove(&ch);
                    return self.channel_open(ch);
                }
                _ => {}
            }
            return Ok(());
        }
        state.assembler.check_method()?;
        self.dispatch(ch, m)
            .await
            .map_err(|e| if e.class_id == 0 && e.method_id == 0 { e.on(class_id, method_id) } else { e })
    }

    async fn dispatch(&mut self, ch: u16, m: AMQPClass) -> AmqpResult<()> {
        use basic::AMQPMethod as B;
        // Anything but a publish must see the effect of the publishes before it.
        if !matches!(m, AMQPClass::Basic(B::Publish(_))) {
            self.flush_publishes().await;
        }
        match m {
            AMQPClass::Channel(c) => self.on_channel_class(ch, c),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.reply(ch, AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})));
                Ok(())
            }
            AMQPClass::Exchange(e) => self.on_exchange(ch, e),
            AMQPClass::Queue(q) => self.on_queue(ch, q).await,
            AMQPClass::Basic(b) => self.on_basic(ch, b).await,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let c = self.open_channel(ch)?;
                if c.confirms.is_none() {
                    c.confirms = Some(Default::default());
                }
                if !s.nowait {
                    self.reply(ch, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})));
                }
                Ok(())
            }
            AMQPClass::Tx(_) => Err(AmqpError::not_implemented("transactions (tx.*) are not supported yet")),
            _ => Err(unimplemented()),
        }
    }

    fn channel_open(&mut self, ch: u16) -> AmqpResult<()> {
        let max = self.neg.channel_max as usize;
        if self.channels.len() >= max {
            return Err(AmqpError::not_allowed(format_args!(
                "number of channels opened ({}) has reached the negotiated channel_max ({max})",
                self.channels.len()
            )));
        }
        self.channels.insert(ch, Channel::new(ch));
        self.reply(ch, AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})));
        Ok(())
    }

    fn on_channel_class(&mut self, ch: u16, m: channel::AMQPMethod) -> AmqpResult<()> {
        use channel::AMQPMethod as C;
        match m {
            C::Open(_) => Err(AmqpError::channel_error("second 'channel.open' seen")),
            C::Close(_) => {
                self.reply(ch, AMQPClass::Channel(C::CloseOk(Default::default())));
                if let Some(c) = self.channels.remove(&ch) {
                    self.spawn_release(c);
                }
                Ok(())
            }
            C::Flow(f) => {
                if !f.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                self.reply(ch, AMQPClass::Channel(C::FlowOk(channel::FlowOk { active: true })));
                Ok(())
            }
            C::FlowOk(_) => Ok(()),
            _ => Err(unimplemented()),
        }
    }

    fn on_exchange(&mut self, ch: u16, m: exchange::AMQPMethod) -> AmqpResult<()> {
        use exchange::AMQPMethod as E;
        let vhost = self.vhost.clone();
        match m {
            E::Declare(d) => {
                vhost.declare_exchange(&ExchangeDeclare {
                    name: strip_cr_lf(d.exchange.as_str()),
                    kind: d.kind.as_str().to_string(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                })?;
                if !d.nowait {
                    self.reply(ch, AMQPClass::Exchange(E::DeclareOk(exchange::DeclareOk {})));
                }
            }
            E::Delete(d) => {
                vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.reply(ch, AMQPClass::Exchange(E::DeleteOk(exchange::DeleteOk {})));
                }
            }
            E::Bind(b) => {
                vhost.bind_exchange(b.destination.as_str(), b.source.as_str(), b.routing_key.as_str(), &b.arguments)?;
                if !b.nowait {
                    self.reply(ch, AMQPClass::Exchange(E::BindOk(exchange::BindOk {})));
                }
            }
            E::Unbind(b) => {
                vhost.unbind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    self.reply(ch, AMQPClass::Exchange(E::UnbindOk(exchange::UnbindOk {})));
                }
            }
            _ => return Err(unimplemented()),
        }
        Ok(())
    }

    /// Resolve an empty queue name to the channel's last declared queue.
    fn queue_name(&mut self, ch: u16, name: &str) -> AmqpResult<String> {
        if !name.is_empty() {
            return Ok(strip_cr_lf(name));
        }
        self.open_channel(ch)?.last_queue.clone().ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    async fn on_queue(&mut self, ch: u16, m: queue::AMQPMethod) -> AmqpResult<()> {
        use queue::AMQPMethod as Q;
        let vhost = self.vhost.clone();
        match m {
            Q::Declare(d) => {
                let mut name = strip_cr_lf(d.queue.as_str());
                if name.is_empty() && d.passive {
                    name = self.open_channel(ch)?.last_queue.clone().unwrap_or_default();
                }
                let decl = QueueDeclare {
                    name,
                    passive: d.passive,
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                let (entry, _) = vhost.declare_queue(&decl, self.id)?;
                self.open_channel(ch)?.last_queue = Some(entry.name.clone());
                if !d.nowait {
                    let (reply, rx) = oneshot::channel();
                    entry.handle.send(QueueCmd::Stats { reply }).await;
                    let stats = rx.await.unwrap_or_default();
                    self.reply(
                        ch,
                        AMQPClass::Queue(Q::DeclareOk(queue::DeclareOk {
                            queue: entry.name.as_str().into(),
                            message_count: stats.messages,
                            consumer_count: stats.consumers,
                        })),
                    );
                }
            }
            Q::Bind(b) => {
                let name = self.queue_name(ch, b.queue.as_str())?;
                let key = if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                    name.clone()
                } else {
                    b.routing_key.as_str().to_string()
                };
                vhost.bind_queue(&name, b.exchange.as_str(), &key, &b.arguments, self.id)?;
                if !b.nowait {
                    self.reply(ch, AMQPClass::Queue(Q::BindOk(queue::BindOk {})));
                }
            }
            Q::Unbind(b) => {
                let name = self.queue_name(ch, b.queue.as_str())?;
                let key = if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                    name.clone()
                } else {
                    b.routing_key.as_str().to_string()
                };
                vhost.unbind_queue(&name, b.exchange.as_str(), &key, &b.arguments, self.id)?;
                self.reply(ch, AMQPClass::Queue(Q::UnbindOk(queue::UnbindOk {})));
            }
            Q::Purge(p) => {
                let name = self.queue_name(ch, p.queue.as_str())?;
                let q = vhost.queue(&name, self.id)?;
                let (reply, rx) = oneshot::channel();
                q.handle.send(QueueCmd::Purge { reply }).await;
                let n = rx.await.unwrap_or(0);
                if !p.nowait {
                    self.reply(ch, AMQPClass::Queue(Q::PurgeOk(queue::PurgeOk { message_count: n })));
                }
            }
            Q::Delete(d) => {
                let name = self.queue_name(ch, d.queue.as_str())?;
                let n = vhost.delete_queue(&name, d.if_unused, d.if_empty, self.id).await?;
                if !d.nowait {
                    self.reply(ch, AMQPClass::Queue(Q::DeleteOk(queue::DeleteOk { message_count: n })));
                }
            }
            _ => return Err(unimplemented()),
        }
        Ok(())
    }

    async fn on_basic(&mut self, ch: u16, m: basic::AMQPMethod) -> AmqpResult<()> {
        use basic::AMQPMethod as B;
        match m {
            B::Publish(p) => {
                if p.immediate {
                    return Err(AmqpError::not_implemented("immediate=true"));
                }
                let c = self.open_channel(ch)?;
                c.assembler.start(PublishMethod {
                    exchange: p.exchange.as_str().to_string(),
                    routing_key: p.routing_key.as_str().to_string(),
                    mandatory: p.mandatory,
                });
                Ok(())
            }
            B::Qos(q) => {
                // prefetch_size != 0 was refused by the decoder (amq-protocol drops the field).
                let c = self.open_channel(ch)?;
                if q.global {
                    c.limit.set_limit(q.prefetch_count as u32);
                    // A raised limit applies at once to existing consumers.
                    for queue in c.consumer_queues() {
                        queue.send(QueueCmd::Resume).await;
                    }
                } else {
                    c.consumer_prefetch = q.prefetch_count as u32;
                }
                self.reply(ch, AMQPClass::Basic(B::QosOk(basic::QosOk {})));
                Ok(())
            }
            B::Consume(c) => self.basic_consume(ch, c).await,
            B::Cancel(c) => {
                let tag: Arc<str> = c.consumer_tag.as_str().into();
                let chan = self.open_channel(ch)?;
                match chan.consumers.get(&tag).cloned() {
                    Some(consumer) if !consumer.queue.tx.is_closed() && !chan.cancelling.contains_key(&tag) => {
                        chan.cancelling.insert(tag.clone(), c.nowait);
                        let reply = Some(self.inbox.clone());
                        consumer.queue.send(QueueCmd::Cancel { conn_id: self.id, channel: ch, tag, reply }).await;
                    }
                    _ => {
                        chan.consumers.remove(&tag);
                        if !c.nowait {
                            send_cancel_ok(&mut self.out, ch, &tag);
                        }
                    }
                }
                Ok(())
            }
            B::Get(g) => self.basic_get(ch, g).await,
            B::Ack(a) => self.settle(ch, a.delivery_tag, a.multiple, Outcome::Ack).await,
            B::Nack(n) => {
                let outcome = if n.requeue { Outcome::Requeue } else { Outcome::Reject };
                self.settle(ch, n.delivery_tag, n.multiple, outcome).await
            }
            B::Reject(r) => {
                let outcome = if r.requeue { Outcome::Requeue } else { Outcome::Reject };
                self.settle(ch, r.delivery_tag, false, outcome).await
            }
            B::Recover(r) => {
                if !r.requeue {
                    return Err(AmqpError::not_implemented("requeue=false"));
                }
                self.settle(ch, 0, true, Outcome::Requeue).await?;
                self.reply(ch, AMQPClass::Basic(B::RecoverOk(basic::RecoverOk {})));
                Ok(())
            }
            B::RecoverAsync(r) => {
                if !r.requeue {
                    return Err(AmqpError::not_implemented("requeue=false"));
                }
                self.settle(ch, 0, true, Outcome::Requeue).await
            }
            _ => Err(unimplemented()),
        }
    }

    async fn basic_consume(&mut self, ch: u16, c: basic::Consume) -> AmqpResult<()> {
        let name = self.queue_name(ch, c.queue.as_str())?;
        let entry = self.vhost.queue(&name, self.id)?;
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            names::consumer_tag().into()
        } else {
            c.consumer_tag.as_str().into()
        };
        let (conn_id, inbox, gauge) = (self.id, self.inbox.clone(), self.gauge_handle());
        let chan = self.open_channel(ch)?;
        if chan.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format_args!("attempt to reuse consumer tag '{tag}'")));
        }
        let spec = ConsumerSpec {
            conn_id,
            channel: ch,
            tag: tag.clone(),
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            prefetch: chan.consumer_prefetch,
            channel_limit: chan.limit.clone(),
            gauge,
            inbox,
        };
        let (reply, rx) = oneshot::channel();
        entry.handle.send(QueueCmd::Consume { spec, reply }).await;
        rx.await.unwrap_or_else(|_| {
            Err(AmqpError::not_found(format_args!("no queue '{name}' in vhost '{}'", self.vhost.name())))
        })?;
        self.open_channel(ch)?
            .consumers
            .insert(tag.clone(), ChannelConsumer { queue: entry.handle.clone(), no_ack: c.no_ack });
        if !c.nowait {
            self.reply(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: tag.as_ref().into() })),
            );
        }
        Ok(())
    }

    async fn basic_get(&mut self, ch: u16, g: basic::Get) -> AmqpResult<()> {
        let name = self.queue_name(ch, g.queue.as_str())?;
        let entry = self.vhost.queue(&name, self.id)?;
        let (reply, rx) = oneshot::channel();
        entry.handle.send(QueueCmd::Get { reply, no_ack: g.no_ack }).await;
        let got = rx.await.ok().flatten();
        let frame_max = self.neg.frame_max;
        let chan = self.open_channel(ch)?;
        match got {
            None => {
                self.reply(ch, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})));
            }
            Some(r) => {
                let tag = chan.unacked.next_tag();
                if !g.no_ack {
                    chan.unacked.insert(tag, Pending { queue: entry.handle.clone(), seq: r.seq, from_consumer: false });
                }
                let msg = &r.msg;
                encode::get_ok(&mut self.out, ch, tag, r.redelivered, &msg.exchange, &msg.routing_key, r.remaining);
                encode::content(&mut self.out, ch, &msg.raw_header, &msg.body, frame_max);
            }
        }
        Ok(())
    }

    /// ack / nack / reject / recover: settle deliveries and tell their queues.
    async fn settle(&mut self, ch: u16, tag: u64, multiple: bool, outcome: Outcome) -> AmqpResult<()> {
        let chan = self.open_channel(ch)?;
        let taken = chan.unacked.take(tag, multiple)?;
        let from_consumers = taken.iter().filter(|p| p.from_consumer).count() as u32;
        let mut per_queue: Vec<(QueueHandle, Vec<u64>)> = Vec::new();
        for p in taken {
            match per_queue.iter_mut().find(|(q, _)| q.tx.same_channel(&p.queue.tx)) {
                Some((_, seqs)) => seqs.push(p.seq),
                None => per_queue.push((p.queue, vec![p.seq])),
            }
        }
        let woken = if from_consumers > 0 && chan.limit.limit() > 0 {
            chan.limit.release(from_consumers);
            chan.consumer_queues()
        } else {
            chan.limit.release(from_consumers);
            Vec::new()
        };
        for (q, seqs) in per_queue {
            q.send(QueueCmd::Settle { seqs, outcome }).await;
        }
        // Channel-wide credit freed: queues of this channel's other consumers may deliver again.
        for q in woken {
            q.send(QueueCmd::Resume).await;
        }
        Ok(())
    }

    fn gauge_handle(&self) -> Arc<super::flow::FlowGauge> {
        self.gauge.clone()
    }

    /// A content header or body frame for channel `ch`.
    pub(super) async fn on_content(&mut self, ch: u16, f: ContentFrame) -> AmqpResult<()> {
        let max_size = self.broker.config.amqp.max_message_size;
        let Some(chan) = self.channels.get_mut(&ch) else {
            return Err(AmqpError::channel_error("expected 'channel.open'"));
        };
        if chan.phase == ChannelPhase::Closing {
            return Ok(());
        }
        let step = match f {
            ContentFrame::Header(h) => {
                let size = h.body_size;
                let step = chan.assembler.header(h)?;
                if size > max_size {
                    // Refuse before buffering the body; the rest of it is dropped with the channel.
                    return Err(AmqpError::precondition(format_args!(
                        "message size {size} is larger than configured max size {max_size}"
                    ))
                    .on(CLASS_BASIC, 40));
                }
                step
            }
            ContentFrame::Body(b) => chan.assembler.body(b)?,
        };
        match step {
            Step::Pending => Ok(()),
            Step::Complete(content) => self.publish(ch, content).map_err(|e| e.on(CLASS_BASIC, 40)),
        }
    }

    /// Validate, route and enqueue a complete message.
    fn publish(&mut self, ch: u16, content: Content) -> AmqpResult<()> {
        let Content { method, header, body } = content;
        let topology = self.vhost.snapshot();
        if !method.exchange.is_empty() {
            let x = topology.exchanges.get(&method.exchange).ok_or_else(|| {
                AmqpError::not_found(format_args!("no exchange '{}' in vhost '{}'", method.exchange, self.vhost.name()))
            })?;
            if x.internal {
                return Err(AmqpError::access_refused(format_args!(
                    "cannot publish to internal exchange '{}' in vhost '{}'",
                    method.exchange,
                    self.vhost.name()
                )));
            }
        }
        validate_properties(&header)?;
        let msg = Arc::new(Message {
            exchange: method.exchange,
            routing_key: method.routing_key,
            properties: header.properties,
            raw_header: header.raw,
            body,
            body_size: header.body_size,
        });
        let queues = topology.route(&msg.exchange, &msg.routing_key, msg.properties.headers().as_ref());
        let inbox = self.inbox.clone();
        let frame_max = self.neg.frame_max;
        let chan = self.open_channel(ch)?;
        let seq = chan.confirms.as_mut().map(|c| c.next_seq());
        if queues.is_empty() {
            if method.mandatory {
                let ret = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: 312,
                    reply_text: "NO_ROUTE".into(),
                    exchange: msg.exchange.as_str().into(),
                    routing_key: msg.routing_key.as_str().into(),
                }));
                encode::method(&mut self.out, ch, &ret);
                encode::content(&mut self.out, ch, &msg.raw_header, &msg.body, frame_max);
            }
            if let Some(seq) = seq {
                let chan = self.open_channel(ch)?;
                let acks = chan.confirms.as_ref().map(|c| c.acks_for(vec![seq])).unwrap_or_default();
                for a in acks {
                    encode::confirm(&mut self.out, ch, a.tag, a.multiple, a.ack);
                }
            }
            return Ok(());
        }
        if let (Some(seq), Some(c)) = (seq, chan.confirms.as_mut()) {
            c.track(seq, queues.len() as u32);
        }
        for q in &queues {
            let confirm = seq.map(|seq| ConfirmTo { inbox: inbox.clone(), channel: ch, seq });
            self.push_publish(&q.handle, Publish { msg: msg.clone(), confirm });
        }
        Ok(())
    }
}

/// Property checks RabbitMQ makes on publish.
fn validate_properties(h: &ContentHeader) -> AmqpResult<()> {
    if let Some(mode) = h.properties.delivery_mode()
        && !matches!(mode, 1 | 2)
    {
        return Err(AmqpError::precondition(format_args!("invalid message: {{delivery_mode_unknown,{mode}}}")));
    }
    if let Some(exp) = h.properties.expiration() {
        parse_expiration(exp.as_str())?;
    }
    Ok(())
}

/// The `expiration` property: a non-negative integer string of milliseconds (RabbitMQ's
/// accept/reject set and texts).
pub fn parse_expiration(s: &str) -> AmqpResult<u64> {
    let invalid = |why: String| AmqpError::precondition(format_args!("invalid expiration '{s}': {why}"));
    let body = s.strip_prefix('+').unwrap_or(s);
    let (neg, digits_part) = match body.strip_prefix('-') {
        Some(rest) if !s.starts_with('+') => (true, rest),
        _ => (false, body),
    };
    let digits: String = digits_part.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return Err(invalid("no_integer".into()));
    }
    let rest = &digits_part[digits.len()..];
    if !rest.is_empty() {
        return Err(invalid(format!("{{leftover_string,\"{rest}\"}}")));
    }
    let value: u128 = digits.parse().unwrap_or(u128::MAX);
    if neg && value > 0 {
        return Err(invalid(format!("{{value_negative,-{value}}}")));
    }
    // Ten years in milliseconds, RabbitMQ's upper bound.
    const MAX: u128 = 315_360_000_000;
    if value > MAX {
        return Err(invalid(format!("{{value_too_large,{value}}}")));
    }
    Ok(value as u64)
}

/// RabbitMQ strips CR and LF from entity names.
fn strip_cr_lf(s: &str) -> String {
    s.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

#[cfg(test)]
mod tests {
    use super::parse_expiration;

    #[test]
    fn expiration_accepts_and_rejects_as_rabbitmq() {
        for (s, v) in [("60000", 60000), ("0", 0), ("+10", 10), ("010", 10)] {
            assert_eq!(parse_expiration(s).unwrap(), v, "{s}");
        }
        let text = |s: &str| parse_expiration(s).unwrap_err().text;
        assert_eq!(text(""), "PRECONDITION_FAILED - invalid expiration '': no_integer");
        assert_eq!(text("abc"), "PRECONDITION_FAILED - invalid expiration 'abc': no_integer");
        assert_eq!(text(" 10"), "PRECONDITION_FAILED - invalid expiration ' 10': no_integer");
        assert_eq!(text("1.5"), "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}");
        assert_eq!(text("-1"), "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}");
        assert!(text("99999999999999999999").contains("value_too_large"));
    }
}
