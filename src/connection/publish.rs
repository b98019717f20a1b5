//! The publish path: content frames are assembled per channel, the complete message is
//! validated (RabbitMQ's checks and texts), then routed against the vhost's topology snapshot
//! and added to this turn's per-queue batch. Also here: sender-selected distribution
//! (`CC`/`BCC`), direct reply-to, the plugin-compatible delayed and deduplication exchanges,
//! and transactions (publishes and settlements held until `tx.commit`).

use std::sync::Arc;
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Connection;
use crate::broker::delayed::{Delayed, delay_of};
use crate::broker::topology::Topology;
use crate::channel::ChannelPhase;
use crate::channel::assembler::{Content, Step};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::dedup::dedup_key;
use crate::message::{Message, parse_expiration};
use crate::protocol::CLASS_BASIC;
use crate::protocol::codec::parse_header;
use crate::protocol::encode;
use crate::protocol::methods::{type_name, value_int, value_str};
use crate::protocol::properties;
use crate::queue::{ConfirmTo, ConnEvent, Publish, QueueCmd, QueueHandle};

/// A connection's first this many messages are copied out of its read buffer (see
/// [`Message::compacted`]): enough for the one-shot publishers that would leave a read buffer
/// pinned per queued message; a long-lived publisher's later messages share their buffers.
pub const COMPACT_FIRST: u8 = 8;
/// Bodies above this are not copied (they take most of their buffer anyway).
const COMPACT_MAX_BODY: u64 = 4096;

/// The pseudo-queue of direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A content frame for a channel's assembler.
pub enum ContentFrame {
    /// The header frame's payload, undecoded.
    Header(Bytes),
    Body(Bytes),
}

impl Connection {
    /// A content header or body frame for channel `ch`.
    pub(super) async fn on_content(&mut self, ch: u16, f: ContentFrame) -> AmqpResult<()> {
        let max_size = self.broker.config.amqp.max_message_size;
        let Some(chan) = self.channels.get_mut(&ch) else {
            // A channel that was never opened expects a method (channel.open) first; RabbitMQ
            // 3.10 says so as for any content frame out of place, on channel 0.0.
            return Err(AmqpError::unexpected_frame("expected method frame, got non method frame instead"));
        };
        if chan.phase == ChannelPhase::Closing {
            return Ok(());
        }
        let step = match f {
            ContentFrame::Header(payload) => {
                let h = match parse_header(ch, payload) {
                    Ok(h) => h,
                    Err(e) => {
                        // Undecodable properties: a frame error; hang up after saying so, as
                        // for any frame the decoder rejects.
                        self.done = true;
                        return Err(e);
                    }
                };
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
            ContentFrame::Body(b) => chan.assembler.body(b, &self.content_budget)?,
        };
        match step {
            Step::Pending => Ok(()),
            Step::Complete(content) => self.publish(ch, content).map_err(|e| e.on(CLASS_BASIC, 40)),
        }
    }

    /// Validate a complete message, then route it now or hold it for the transaction.
    fn publish(&mut self, ch: u16, content: Content) -> AmqpResult<()> {
        let Content { method, header, body } = content;
        // Write permission on the exchange, before it is looked up (as RabbitMQ); the last
        // exchange allowed is remembered until the permissions change, so a stream of publishes
        // to one exchange checks once.
        if self.write_allowed.as_deref() != Some(&*method.exchange) {
            self.permission.check(crate::auth::permissions::Access::Write, "exchange", &method.exchange)?;
            self.write_allowed = Some((*method.exchange).into());
        }
        let topology = self.vhost.snapshot();
        if !method.exchange.is_empty() {
            let x = topology.exchanges.get(&*method.exchange).ok_or_else(|| {
                AmqpError::not_found(format_args!("no exchange '{}' in vhost '{}'", method.exchange, self.vhost.name()))
            })?;
            if x.internal {
                return Err(AmqpError::access_refused(format_args!(
                    "cannot publish to internal exchange '{}' in vhost '{}'",
                    method.exchange,
                    self.vhost.name()
                )));
            }
            if x.kind == crate::exchange::ExchangeKind::Topic {
                self.permission.check_topic(
                    crate::auth::permissions::Access::Write,
                    &method.exchange,
                    &method.routing_key,
                )?;
            }
        }
        if !self.rate_limits.is_empty() {
            self.rate_used.0 += 1;
            self.rate_used.1 += body.len() as u64;
        }
        let mut msg = Message::new(method.exchange, method.routing_key, header, body);
        validate_properties(&msg)?;
        // user_id must name the authenticated user, unless it may impersonate (RabbitMQ's
        // `impersonator` tag).
        if msg.summary.has(properties::USER_ID)
            && !self.impersonator
            && let Some(uid) = msg.properties().user_id()
            && uid.as_str() != self.neg.user
        {
            return Err(AmqpError::precondition(format_args!(
                "user_id property set to '{}' but authenticated user was '{}'",
                uid.as_str(),
                self.neg.user
            )));
        }
        if self.compact_left > 0 {
            // A connection's first messages get their own allocation (see Message::compacted).
            self.compact_left -= 1;
            msg = msg.compacted(COMPACT_MAX_BODY);
        }
        // Direct reply-to: the requester's reply_to names its channel's reply consumer.
        if msg.summary.has(properties::REPLY_TO)
            && msg.properties().reply_to().as_ref().is_some_and(|r| r.as_str() == REPLY_TO)
        {
            let chan = self.open_channel_ref(ch)?;
            let Some(rc) = &chan.reply_consumer else {
                return Err(AmqpError::precondition("fast reply consumer does not exist"));
            };
            let props = msg.properties().clone().with_reply_to(rc.name.as_str().into());
            msg = msg.with_properties(props);
        }
        let msg = Arc::new(msg);
        let (max_messages, max_bytes) =
            (self.broker.config.amqp.transaction_max_messages, self.broker.config.amqp.transaction_max_bytes);
        let chan = self.open_channel(ch)?;
        if let Some(tx) = chan.tx.as_mut() {
            // RabbitMQ holds a transaction's publishes without limit (only its memory alarm
            // stops the publisher); a bound keeps one channel from taking the broker's memory.
            let size = crate::queue::state::delivery_size(&msg) as u64;
            if max_messages > 0 && tx.publishes.len() as u64 >= max_messages {
                return Err(AmqpError::precondition(format_args!(
                    "transaction holds too many messages: the limit is {max_messages} (amqp.transaction_max_messages); commit more often"
                )));
            }
            if max_bytes > 0 && tx.bytes + size > max_bytes {
                return Err(AmqpError::precondition(format_args!(
                    "transaction holds too many message bytes: the limit is {max_bytes} (amqp.transaction_max_bytes); commit more often"
                )));
            }
            tx.bytes += size;
            tx.publishes.push((msg, method.mandatory));
            return Ok(());
        }
        let seq = chan.confirms.as_mut().map(|c| c.next_seq());
        self.route(&topology, ch, msg, method.mandatory, seq);
        Ok(())
    }

    /// Route a validated message and queue it for its queues, which are left in
    /// `self.routed` (empty: returned to the publisher if mandatory, and confirmed at once).
    fn route(&mut self, topology: &Topology, ch: u16, msg: Arc<Message>, mandatory: bool, seq: Option<u64>) {
        let (msg, cc) = sender_selected(msg);
        let mut queues = std::mem::take(&mut self.routed);
        queues.clear();
        let mut routed = false;
        // Confirmed by someone else later (the delayed-message scheduler, once stored).
        let mut confirm_later = false;
        let exchange = if msg.exchange.is_empty() { None } else { topology.exchanges.get(&*msg.exchange) };
        if msg.exchange.is_empty() && msg.routing_key.starts_with(REPLY_TO) {
            if let Some(r) = self.broker.reply_route(&msg.routing_key, self.vhost.name()) {
                routed = r.inbox.send(ConnEvent::DirectReply { channel: r.channel, msg: msg.clone() }).is_ok();
            }
        } else if let Some(x) = exchange.filter(|x| x.delayed).and_then(|_| delay_of(&msg)) {
            let confirm = seq.map(|seq| ConfirmTo { inbox: self.inbox.clone(), channel: ch, seq });
            confirm_later = confirm.is_some();
            self.vhost.schedule_delayed(Delayed { due: Instant::now() + x, msg: msg.clone(), confirm });
            routed = true;
        } else if exchange.is_some_and(|x| is_duplicate(x, &msg)) {
            // A duplicate is not routed (but is confirmed, like any unroutable message).
        } else {
            let headers = msg.headers();
            match &cc {
                None => topology.route_keys_into(&msg.exchange, &[&*msg.routing_key], headers, &mut queues),
                Some(keys) => topology.route_keys_into(&msg.exchange, keys, headers, &mut queues),
            }
            routed = !queues.is_empty();
        }
        self.stats.publish += 1;
        let unroutable = if !routed && mandatory {
            self.stats.return_unroutable += 1;
            encode::basic_return(&mut self.out, ch, 312, "NO_ROUTE", &msg.exchange, msg.routing_key.as_wire());
            encode::content(&mut self.out, ch, &msg.raw_header, &msg.body, self.neg.frame_max);
            (1, 0)
        } else if !routed {
            self.stats.drop_unroutable += 1;
            (0, 1)
        } else {
            (0, 0)
        };
        if self.exchange_stats.count(&msg.exchange, queues.len()) {
            self.vhost.exchange_counts.absorb(&mut self.exchange_stats);
        }
        let Some(chan) = self.channels.get_mut(&ch) else {
            self.routed = queues;
            return;
        };
        let confirmed_now = seq.is_some() && chan.confirms.is_some() && queues.is_empty() && !confirm_later;
        let counts = chan.stats();
        counts.publish += 1;
        counts.return_unroutable += unroutable.0;
        counts.drop_unroutable += unroutable.1;
        counts.confirm += confirmed_now as u64;
        if let (Some(seq), Some(c)) = (seq, chan.confirms.as_mut()) {
            c.track(seq, queues.len() as u32 + confirm_later as u32);
            if queues.is_empty() && !confirm_later {
                self.stats.confirm += 1;
                for a in c.acks_for(vec![seq]) {
                    encode::confirm(&mut self.out, ch, a.tag, a.multiple, a.ack);
                }
            }
        }
        for q in &queues {
            let confirm = seq.map(|seq| ConfirmTo { inbox: self.inbox.clone(), channel: ch, seq });
            self.push_publish(&q.handle, Publish { msg: msg.clone(), confirm });
        }
        self.routed = queues;
    }

    /// `tx.select`.
    pub(super) fn tx_select(&mut self, ch: u16) -> AmqpResult<()> {
        let chan = self.open_channel(ch)?;
        if chan.confirms.is_some() {
            return Err(AmqpError::precondition("cannot switch from confirm to tx mode"));
        }
        chan.tx.get_or_insert_with(Default::default);
        Ok(())
    }

    /// `tx.commit`: route the held publishes, wait until their queues have them, then apply the
    /// held acks; `basic.return`s for unroutable mandatory messages go out before `commit-ok`.
    pub(super) async fn tx_commit(&mut self, ch: u16) -> AmqpResult<()> {
        let chan = self.open_channel(ch)?;
        let Some(tx) = chan.tx.as_mut() else { return Err(AmqpError::precondition("channel is not transactional")) };
        let work = std::mem::take(tx);
        let mut touched: Vec<QueueHandle> = Vec::new();
        let topology = self.vhost.snapshot();
        for (msg, mandatory) in work.publishes {
            self.route(&topology, ch, msg, mandatory, None);
            for q in &self.routed {
                if !touched.iter().any(|t| t.tx.same_channel(&q.handle.tx)) {
                    touched.push(q.handle.clone());
                }
            }
        }
        self.flush_publishes().await;
        for q in touched {
            let (reply, rx) = oneshot::channel();
            q.send(QueueCmd::Sync { reply }).await;
            let _ = rx.await;
        }
        for (entries, outcome) in work.settles {
            self.settle_taken(ch, entries.into_iter().map(|(_, p)| p).collect(), outcome).await;
        }
        Ok(())
    }

    /// `tx.rollback`: drop the held publishes; held acks become outstanding again.
    pub(super) fn tx_rollback(&mut self, ch: u16) -> AmqpResult<()> {
        let chan = self.open_channel(ch)?;
        let Some(tx) = chan.tx.as_mut() else { return Err(AmqpError::precondition("channel is not transactional")) };
        let work = std::mem::take(tx);
        for (entries, _) in work.settles {
            chan.unacked.restore(entries);
        }
        Ok(())
    }

    /// A reply for this connection's direct reply-to consumer on `ch`.
    pub(super) fn deliver_reply(&mut self, ch: u16, msg: &Message) {
        let frame_max = self.neg.frame_max;
        let Some(chan) = self.channels.get_mut(&ch).filter(|c| c.phase == ChannelPhase::Open) else { return };
        let Some(rc) = chan.reply_consumer.clone() else { return };
        let tag = chan.unacked.next_tag();
        encode::deliver(&mut self.out, ch, &rc.tag, tag, false, &msg.exchange, msg.routing_key.as_wire());
        encode::content(&mut self.out, ch, &msg.raw_header, &msg.body, frame_max);
    }
}

/// Property checks RabbitMQ makes on publish.
fn validate_properties(msg: &Message) -> AmqpResult<()> {
    if let Some(mode) = msg.summary.delivery_mode
        && !matches!(mode, 1 | 2)
    {
        return Err(AmqpError::precondition(format_args!("invalid message: {{delivery_mode_unknown,{mode}}}")));
    }
    if let Some(exp) = msg.expiration() {
        parse_expiration(exp)?;
    }
    if let Some(headers) = msg.headers() {
        for key in ["CC", "BCC"] {
            match headers.inner().get(key) {
                None | Some(AMQPValue::FieldArray(_)) => {}
                Some(other) => {
                    return Err(AmqpError::precondition(format_args!(
                        "invalid message: {{unacceptable_type_in_header,\"{key}\",{}}}",
                        type_name(other)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Sender-selected distribution: with `CC` or `BCC` headers, the routing keys are the
/// message's own plus those (`None`: just its own); `BCC` is removed before anyone sees the
/// message.
fn sender_selected(msg: Arc<Message>) -> (Arc<Message>, Option<Vec<String>>) {
    let Some(headers) = msg.headers() else { return (msg, None) };
    if !headers.contains_key("CC") && !headers.contains_key("BCC") {
        return (msg, None);
    }
    let mut keys = vec![msg.routing_key.to_string()];
    for key in ["CC", "BCC"] {
        if let Some(AMQPValue::FieldArray(a)) = headers.inner().get(key) {
            keys.extend(a.as_slice().iter().filter_map(value_str));
        }
    }
    let keys = Some(keys);
    if !headers.contains_key("BCC") {
        return (msg, keys);
    }
    let mut stripped = FieldTable::default();
    for (k, v) in headers.inner() {
        if k.as_str() != "BCC" {
            stripped.insert(k.clone(), v.clone());
        }
    }
    let props = msg.properties().clone().with_headers(stripped);
    (Arc::new(msg.with_properties(props)), keys)
}

/// For a deduplication exchange: whether the message's `x-deduplication-header` was seen.
fn is_duplicate(x: &crate::exchange::Exchange, msg: &Message) -> bool {
    let Some(cache) = &x.dedup else { return false };
    let Some(headers) = msg.headers() else { return false };
    let Some(key) = headers.inner().get("x-deduplication-header") else { return false };
    let ttl = headers
        .inner()
        .get("x-cache-ttl")
        .and_then(value_int)
        .filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis((ms as u64).min(crate::queue::args::MAX_TTL_MS as u64)));
    cache.lock().unwrap_or_else(|p| p.into_inner()).check(dedup_key(key), ttl, Instant::now())
}
