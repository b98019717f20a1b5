//! Channel-level method handlers: one function per AMQP method, called by the connection
//! task. Each returns an [`AmqpError`] for the connection to turn into the right close; the
//! class and method ids are attached by [`Connection::on_channel_method`].
//!
//! Publishing: `basic.publish` starts the channel's content assembler; the completed message
//! is validated, routed against the vhost's topology snapshot, and added to this turn's
//! per-queue batch ([`Connection::push_publish`]).

use std::sync::Arc;

use amq_protocol::protocol::{access, basic, channel, confirm, exchange, queue};
use tokio::sync::oneshot;

use super::Connection;
use crate::auth::permissions::Access;
use crate::broker::ReplyRoute;
use crate::broker::names;
use crate::broker::vhost::{ExchangeDeclare, QueueDeclare};
use crate::channel::assembler::PublishMethod;
use crate::channel::unacked::{Pending, group_by_queue};
use crate::channel::{Channel, ChannelPhase, ReplyConsumer};
use crate::error::{AmqpError, AmqpResult};
use crate::protocol::encode::{self, Outbound};
use crate::protocol::methods::{type_name, value_int, value_str};
use crate::protocol::{AMQPClass, CLASS_BASIC};
use crate::queue::stream_args;
use crate::queue::{ConsumerSpec, Outcome, QueueCmd, QueueEntry};

use super::publish::REPLY_TO;

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

    pub(super) fn open_channel(&mut self, ch: u16) -> Result<&mut Channel, AmqpError> {
        match self.channels.get_mut(&ch) {
            Some(c) if c.phase == ChannelPhase::Open => Ok(c),
            _ => Err(AmqpError::channel_error("expected 'channel.open'")),
        }
    }

    pub(super) fn open_channel_ref(&self, ch: u16) -> Result<&Channel, AmqpError> {
        match self.channels.get(&ch) {
            Some(c) if c.phase == ChannelPhase::Open => Ok(c),
            _ => Err(AmqpError::channel_error("expected 'channel.open'")),
        }
    }

    /// `basic.publish` on channel `ch` (not 0): the hot path of [`Self::on_channel_method`],
    /// with the same checks, for the hand-decoded method.
    pub(super) async fn on_publish(&mut self, ch: u16, p: PublishMethod) -> AmqpResult<()> {
        let on = |e: AmqpError| if e.class_id == 0 && e.method_id == 0 { e.on(CLASS_BASIC, 40) } else { e };
        match self.channels.get(&ch) {
            None => Err(on(AmqpError::channel_error("expected 'channel.open'"))),
            Some(state) if state.phase == ChannelPhase::Closing => Ok(()),
            Some(state) => {
                state.assembler.check_method()?;
                self.start_publish(ch, p).map_err(on)
            }
        }
    }

    fn start_publish(&mut self, ch: u16, p: PublishMethod) -> AmqpResult<()> {
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        self.block_if_alarmed();
        self.open_channel(ch)?.assembler.start(p);
        Ok(())
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
                    self.stats.channel_closed += 1;
                    self.channels_changed();
                }
                // A client that took our close-ok for the end of the channel may reopen it.
                AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                    self.channels.remove(&ch);
                    self.stats.channel_closed += 1;
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
            AMQPClass::Exchange(e) => {
                let r = self.on_exchange(ch, e);
                self.definitions_wait = self.vhost.definitions_written();
                r
            }
            AMQPClass::Queue(q) => {
                let r = self.on_queue(ch, q).await;
                self.definitions_wait = self.vhost.definitions_written();
                r
            }
            AMQPClass::Basic(b) => self.on_basic(ch, b).await,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let c = self.open_channel(ch)?;
                if c.tx.is_some() {
                    return Err(AmqpError::precondition("cannot switch from tx to confirm mode"));
                }
                if c.confirms.is_none() {
                    c.confirms = Some(Default::default());
                }
                if !s.nowait {
                    self.reply(ch, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})));
                }
                Ok(())
            }
            AMQPClass::Tx(t) => {
                use amq_protocol::protocol::tx::{self, AMQPMethod as T};
                let reply = match t {
                    T::Select(_) => {
                        self.tx_select(ch)?;
                        T::SelectOk(tx::SelectOk {})
                    }
                    T::Commit(_) => {
                        self.tx_commit(ch).await?;
                        T::CommitOk(tx::CommitOk {})
                    }
                    T::Rollback(_) => {
                        self.tx_rollback(ch)?;
                        T::RollbackOk(tx::RollbackOk {})
                    }
                    _ => return Err(unimplemented()),
                };
                self.reply(ch, AMQPClass::Tx(reply));
                Ok(())
            }
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
        // The user's max-channels, over all its connections (RabbitMQ 3.10's text).
        self.channels_changed();
        if let Some(limit) = self.broker.users().get(&self.neg.user).and_then(|u| u.limits.max_channels) {
            let user = self.neg.user.clone();
            if self.broker.connections.channels_where(|c| c.user == user) as u64 >= limit {
                return Err(AmqpError::not_allowed(format_args!(
                    "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})"
                )));
            }
        }
        self.channels.insert(ch, Channel::new(ch));
        self.stats.channel_created += 1;
        self.channels_changed();
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
                    self.stats.channel_closed += 1;
                    self.release(c);
                }
                self.channels_changed();
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
                let name = d.exchange.as_str();
                // A new `amq.*` exchange is refused for its name first (as RabbitMQ).
                let reserved_new = name.starts_with("amq.") && !vhost.snapshot().exchanges.contains_key(name);
                if !d.passive && !name.is_empty() && !reserved_new {
                    self.permission.check(Access::Configure, "exchange", name)?;
                }
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
                if !d.exchange.as_str().is_empty() {
                    self.permission.check(Access::Configure, "exchange", d.exchange.as_str())?;
                }
                vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.reply(ch, AMQPClass::Exchange(E::DeleteOk(exchange::DeleteOk {})));
                }
            }
            E::Bind(b) => {
                self.check_exchange_binding(b.destination.as_str(), b.source.as_str(), b.routing_key.as_str())?;
                vhost.bind_exchange(b.destination.as_str(), b.source.as_str(), b.routing_key.as_str(), &b.arguments)?;
                if !b.nowait {
                    self.reply(ch, AMQPClass::Exchange(E::BindOk(exchange::BindOk {})));
                }
            }
            E::Unbind(b) => {
                self.check_exchange_binding(b.destination.as_str(), b.source.as_str(), b.routing_key.as_str())?;
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

    /// exchange.bind/unbind: write on the destination, then read on the source (the default
    /// exchange is refused by the vhost for what it is).
    fn check_exchange_binding(&self, destination: &str, source: &str, key: &str) -> AmqpResult<()> {
        if destination.is_empty() || source.is_empty() {
            return Ok(());
        }
        self.permission.check(Access::Write, "exchange", destination)?;
        self.permission.check(Access::Read, "exchange", source)?;
        self.check_topic_binding(source, key)
    }

    /// queue.bind/unbind: write on the queue, then read on the exchange.
    fn check_queue_binding(&self, queue: &str, exchange: &str, key: &str) -> AmqpResult<()> {
        if exchange.is_empty() {
            return Ok(());
        }
        self.permission.check(Access::Write, "queue", queue)?;
        self.permission.check(Access::Read, "exchange", exchange)?;
        self.check_topic_binding(exchange, key)
    }

    /// A binding key on a topic exchange with topic permissions: their read pattern.
    fn check_topic_binding(&self, source: &str, key: &str) -> AmqpResult<()> {
        let topic =
            self.vhost.snapshot().exchanges.get(source).is_some_and(|x| x.kind == crate::exchange::ExchangeKind::Topic);
        if topic { self.permission.check_topic(Access::Read, source, key) } else { Ok(()) }
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
                // Direct reply-to names are not queues, but exist while their consumer does.
                if d.passive && (name == REPLY_TO || self.broker.reply_route(&name, self.vhost.name()).is_some()) {
                    let consumers = u32::from(name != REPLY_TO || self.open_channel(ch)?.reply_consumer.is_some());
                    let ok =
                        queue::DeclareOk { queue: name.as_str().into(), message_count: 0, consumer_count: consumers };
                    self.reply(ch, AMQPClass::Queue(Q::DeclareOk(ok)));
                    return Ok(());
                }
                let decl = QueueDeclare {
                    name,
                    passive: d.passive,
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                // The queue may be deleted between the lookup and our command reaching it (an
                // auto-delete queue whose last consumer a no-wait basic.cancel just removed, an
                // expiring or exclusive queue): its actor forgets the name before it answers, so
                // declare again, as RabbitMQ would find it gone (passive: 404; else: a new queue).
                let mut attempts = 0;
                let (entry, stats) = loop {
                    let permission = self.permission.clone();
                    let dlx = decl.arguments.inner().get("x-dead-letter-exchange").and_then(value_str);
                    let may_configure = |name: &str| {
                        permission.check(Access::Configure, "queue", name)?;
                        // Dead-lettering publishes to the DLX from the queue: write on the one,
                        // read on the other (as RabbitMQ checks at declare).
                        if let Some(dlx) = &dlx {
                            permission.check(Access::Write, "exchange", dlx)?;
                            permission.check(Access::Read, "queue", name)?;
                        }
                        Ok(())
                    };
                    let (entry, _) = vhost.declare_queue_checked(&decl, self.id, &may_configure)?;
                    let (reply, rx) = oneshot::channel();
                    entry.handle.send(QueueCmd::Stats { reply }).await;
                    match rx.await {
                        Ok(Some(stats)) => break (entry, stats),
                        Ok(None) if attempts < 3 => attempts += 1,
                        Ok(None) => {
                            return Err(AmqpError::not_found(format_args!(
                                "no queue '{}' in vhost '{}'",
                                entry.name,
                                vhost.name()
                            )));
                        }
                        Err(_) => break (entry, Default::default()),
                    }
                };
                self.open_channel(ch)?.last_queue = Some(entry.name.clone());
                if !d.nowait {
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
                self.check_queue_binding(&name, b.exchange.as_str(), &key)?;
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
                self.check_queue_binding(&name, b.exchange.as_str(), &key)?;
                vhost.unbind_queue(&name, b.exchange.as_str(), &key, &b.arguments, self.id)?;
                self.reply(ch, AMQPClass::Queue(Q::UnbindOk(queue::UnbindOk {})));
            }
            Q::Purge(p) => {
                let name = self.queue_name(ch, p.queue.as_str())?;
                self.permission.check(Access::Read, "queue", &name)?;
                let q = vhost.queue(&name, self.id)?;
                if q.stream.is_some() {
                    return Err(not_for_streams("queue.purge", &name, vhost.name()));
                }
                let (reply, rx) = oneshot::channel();
                q.handle.send(QueueCmd::Purge { reply }).await;
                let n = rx.await.unwrap_or(0);
                if !p.nowait {
                    self.reply(ch, AMQPClass::Queue(Q::PurgeOk(queue::PurgeOk { message_count: n })));
                }
            }
            Q::Delete(d) => {
                let name = self.queue_name(ch, d.queue.as_str())?;
                self.permission.check(Access::Configure, "queue", &name)?;
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
            B::Publish(p) => self.start_publish(
                ch,
                PublishMethod {
                    exchange: p.exchange.as_str().into(),
                    routing_key: p.routing_key.as_str().into(),
                    mandatory: p.mandatory,
                    immediate: p.immediate,
                },
            ),
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
                if chan.reply_consumer.as_ref().is_some_and(|r| r.tag == tag) {
                    if let Some(rc) = chan.reply_consumer.take() {
                        self.broker.unregister_reply(&rc.name);
                    }
                    if !c.nowait {
                        send_cancel_ok(&mut self.out, ch, &tag);
                    }
                    return Ok(());
                }
                match chan.consumers.get(&tag).cloned() {
                    Some(queue) if !queue.tx.is_closed() && !chan.cancelling.contains_key(&tag) => {
                        chan.cancelling.insert(tag.clone(), c.nowait);
                        let reply = Some(self.inbox.clone());
                        queue.send(QueueCmd::Cancel { conn_id: self.id, channel: ch, tag, reply }).await;
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
        // consumer_max_per_channel (RabbitMQ 3.12+): a new consumer past it is a 530.
        let max = self.broker.config.amqp.consumer_max_per_channel;
        if max > 0
            && let Some(state) = self.channels.get(&ch)
            && state.consumers.len() as u64 >= max
            && !state.consumers.contains_key(c.consumer_tag.as_str())
        {
            return Err(AmqpError::not_allowed(format_args!("reached maximum ({max}) of consumers per channel")));
        }
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            names::consumer_tag().into()
        } else {
            c.consumer_tag.as_str().into()
        };
        if c.queue.as_str() == REPLY_TO {
            return self.consume_replies(ch, tag, &c);
        }
        let name = self.queue_name(ch, c.queue.as_str())?;
        self.permission.check(Access::Read, "queue", &name)?;
        let entry = self.vhost.queue(&name, self.id)?;
        if entry.stream.is_some() {
            return self.consume_stream(ch, tag, &c, &name, &entry).await;
        }
        let priority = match c.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => value_int(v).ok_or_else(|| {
                AmqpError::precondition(format_args!(
                    "invalid arg 'x-priority' for queue '{name}' in vhost '{}': \"expected integer, got {}\"",
                    self.vhost.name(),
                    type_name(v)
                ))
            })?,
        };
        // Classic mirroring's flag: no mirrors here, so no effect, but RabbitMQ 3.x checks that
        // it is a boolean (measured on 3.10: `{unacceptable_type,T}` in the queue-argument text).
        if let Some(v) = c.arguments.inner().get("x-cancel-on-ha-failover")
            && !matches!(v, amq_protocol::types::AMQPValue::Boolean(_))
        {
            return Err(AmqpError::precondition(format_args!(
                "invalid arg 'x-cancel-on-ha-failover' for queue '{name}' in vhost '{}': {{unacceptable_type,{}}}",
                self.vhost.name(),
                type_name(v)
            )));
        }
        let spec = self.consumer_spec(ch, &tag, c.no_ack, c.exclusive, priority)?;
        let (reply, rx) = oneshot::channel();
        self.attach_consumer(ch, tag, &entry, QueueCmd::Consume { spec, reply }, rx, c.nowait).await
    }

    /// A new consumer of channel `ch` as its queue sees it (the channel's prefetch and limit);
    /// 530 when the tag is already in use on the channel.
    fn consumer_spec(
        &mut self,
        ch: u16,
        tag: &Arc<str>,
        no_ack: bool,
        exclusive: bool,
        priority: i64,
    ) -> AmqpResult<ConsumerSpec> {
        let (conn_id, inbox, gauge) = (self.id, self.inbox.clone(), self.gauge.clone());
        let chan = self.open_channel(ch)?;
        if chan.consumers.contains_key(tag) {
            return Err(AmqpError::not_allowed(format_args!("attempt to reuse consumer tag '{tag}'")));
        }
        Ok(ConsumerSpec {
            conn_id,
            channel: ch,
            tag: tag.clone(),
            no_ack,
            exclusive,
            prefetch: chan.consumer_prefetch,
            priority,
            channel_limit: chan.limit.clone(),
            gauge,
            inbox,
        })
    }

    /// Hand a consume command to its queue and, once the queue takes the consumer, register it
    /// on the channel and answer consume-ok.
    async fn attach_consumer(
        &mut self,
        ch: u16,
        tag: Arc<str>,
        entry: &QueueEntry,
        cmd: QueueCmd,
        accepted: oneshot::Receiver<AmqpResult<()>>,
        nowait: bool,
    ) -> AmqpResult<()> {
        entry.handle.send(cmd).await;
        accepted.await.unwrap_or_else(|_| {
            Err(AmqpError::not_found(format_args!("no queue '{}' in vhost '{}'", entry.name, self.vhost.name())))
        })?;
        self.open_channel(ch)?.consumers.insert(tag.clone(), entry.handle.clone());
        if !nowait {
            self.reply(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: tag.as_ref().into() })),
            );
        }
        Ok(())
    }

    /// `basic.consume` on a stream: RabbitMQ's checks, then a reader from `x-stream-offset`.
    async fn consume_stream(
        &mut self,
        ch: u16,
        tag: Arc<str>,
        c: &basic::Consume,
        name: &str,
        entry: &QueueEntry,
    ) -> AmqpResult<()> {
        let vhost = self.vhost.name().to_string();
        let chan = self.open_channel(ch)?;
        let now_ms = crate::stream::log::system_clock()();
        let (prefetch, global) = (chan.consumer_prefetch, chan.limit.limit());
        let asked = stream_args::consume(&c.arguments, c.no_ack, prefetch, global, name, &vhost, now_ms)?;
        let spec = self.consumer_spec(ch, &tag, false, c.exclusive, 0)?;
        let (reply, rx) = oneshot::channel();
        let cmd = QueueCmd::ConsumeStream { spec, offset: asked.offset, filter: asked.filter, reply };
        self.attach_consumer(ch, tag, entry, cmd, rx, c.nowait).await
    }

    /// `basic.consume` on `amq.rabbitmq.reply-to`: this channel receives direct replies.
    fn consume_replies(&mut self, ch: u16, tag: Arc<str>, c: &basic::Consume) -> AmqpResult<()> {
        if !c.no_ack {
            return Err(AmqpError::precondition("reply consumer cannot acknowledge"));
        }
        let (inbox, conn_id) = (self.inbox.clone(), self.id);
        let chan = self.open_channel(ch)?;
        if chan.reply_consumer.is_some() {
            return Err(AmqpError::precondition("reply consumer already set"));
        }
        let name = format!("{REPLY_TO}.{conn_id}.{ch}.{}", names::consumer_tag().trim_start_matches("amq.ctag-"));
        chan.reply_consumer = Some(ReplyConsumer { tag: tag.clone(), name: name.clone() });
        self.broker.register_reply(name, ReplyRoute { inbox, channel: ch, vhost: self.vhost.name().to_string() });
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
        self.permission.check(Access::Read, "queue", &name)?;
        let entry = self.vhost.queue(&name, self.id)?;
        if entry.stream.is_some() {
            return Err(not_for_streams("basic.get", &name, self.vhost.name()));
        }
        let (reply, rx) = oneshot::channel();
        entry.handle.send(QueueCmd::Get { reply, no_ack: g.no_ack }).await;
        let got = rx.await.ok().flatten();
        let frame_max = self.neg.frame_max;
        let chan = self.open_channel(ch)?;
        match got {
            None => {
                chan.stats().get_empty += 1;
                self.stats.get_empty += 1;
                self.reply(ch, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})));
            }
            Some(r) => {
                let tag = chan.unacked.next_tag();
                if !g.no_ack {
                    chan.unacked.insert(tag, Pending { queue: entry.handle.clone(), seq: r.seq, from_consumer: false });
                    chan.stats().get += 1;
                } else {
                    chan.stats().get_no_ack += 1;
                }
                chan.stats().redeliver += r.redelivered as u64;
                if !g.no_ack {
                    self.stats.get += 1;
                } else {
                    self.stats.get_no_ack += 1;
                }
                self.stats.redeliver += r.redelivered as u64;
                let msg = &r.msg;
                encode::get_ok(
                    &mut self.out,
                    ch,
                    tag,
                    r.redelivered,
                    &msg.exchange,
                    msg.routing_key.as_wire(),
                    r.remaining,
                );
                encode::content(&mut self.out, ch, &msg.raw_header, &msg.body, frame_max);
            }
        }
        Ok(())
    }

    /// ack / nack / reject / recover: settle deliveries and tell their queues (or hold them
    /// for the transaction).
    async fn settle(&mut self, ch: u16, tag: u64, multiple: bool, outcome: Outcome) -> AmqpResult<()> {
        let chan = self.open_channel(ch)?;
        let taken = chan.unacked.take(tag, multiple)?;
        if let Some(tx) = chan.tx.as_mut() {
            tx.settles.push((taken, outcome));
            return Ok(());
        }
        self.settle_taken(ch, taken.into_iter().map(|(_, p)| p).collect(), outcome).await;
        Ok(())
    }

    /// Tell the queues of settled deliveries, and give back channel prefetch credit.
    pub(super) async fn settle_taken(&mut self, ch: u16, taken: Vec<Pending>, outcome: Outcome) {
        if outcome == Outcome::Ack {
            self.stats.ack += taken.len() as u64;
        }
        let Ok(chan) = self.open_channel(ch) else { return };
        if outcome == Outcome::Ack {
            chan.stats().ack += taken.len() as u64;
        }
        let from_consumers = taken.iter().filter(|p| p.from_consumer).count() as u32;
        let mut per_queue = Vec::new();
        group_by_queue(&mut per_queue, taken);
        chan.limit.release(from_consumers);
        // Channel-wide credit freed: queues of this channel's other consumers may deliver again.
        let woken = if from_consumers > 0 && chan.limit.limit() > 0 { chan.consumer_queues() } else { Vec::new() };
        for (q, seqs) in per_queue {
            q.send(QueueCmd::Settle { seqs, outcome }).await;
        }
        for q in woken {
            q.send(QueueCmd::Resume).await;
        }
    }
}

/// What RabbitMQ answers to an operation stream queues do not have (a connection error).
fn not_for_streams(what: &str, name: &str, vhost: &str) -> AmqpError {
    AmqpError::not_implemented(format_args!("{what} not supported by stream queues queue '{name}' in vhost '{vhost}'"))
}

/// RabbitMQ strips CR and LF from entity names.
pub(super) fn strip_cr_lf(s: &str) -> String {
    s.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}
