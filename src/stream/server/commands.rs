//! The commands of an open connection about publishing and consuming, with RabbitMQ 3.13's
//! checks in its order and its response codes (`rabbit_stream_reader:handle_frame_post_auth`):
//! DeclarePublisher, Publish, QueryPublisherSequence, DeletePublisher, Subscribe, Credit,
//! Unsubscribe, StoreOffset, QueryOffset, the ConsumerUpdate exchange of single active
//! consumers, and re-authentication. Stream and super stream management is in
//! [`super::management`].

use std::sync::Arc;

use bytestring::ByteString;
use tracing::{debug, warn};

use super::connection::Conn;
use super::management;
use super::publishers::Taken;
use super::sac::{GroupKey, Notice};
use super::subscriptions::{New, NoName, Options, PendingUpdate, Sac};
use crate::auth::permissions::Access;
use crate::stream::handle::StreamCmd;
use crate::stream::log::OffsetSpec;
use crate::stream::protocol::frame::{ClientFrame, Properties, PublishedMessage};
use crate::stream::protocol::state::AuthOutcome;
use crate::stream::protocol::{code, encode, key};

impl Conn {
    /// Execute one command of the open connection.
    pub(super) async fn command(&mut self, f: ClientFrame) {
        use ClientFrame as F;
        match f {
            F::DeclarePublisher { correlation_id, publisher_id, reference, stream } => {
                let c = self.declare_publisher(publisher_id, reference, &stream);
                encode::simple_response(self.out.buf(), key::DECLARE_PUBLISHER, correlation_id, c);
            }
            F::Publish { publisher_id, messages, .. } => self.publish(publisher_id, messages).await,
            F::QueryPublisherSequence { correlation_id, reference, stream } => {
                let (c, sequence) = match self.readable_stream(&stream) {
                    Ok(s) => match s.query_publisher_sequence(&reference).await {
                        Ok(n) => (code::OK, n),
                        Err(_) => (code::STREAM_DOES_NOT_EXIST, 0),
                    },
                    Err(c) => (c, 0),
                };
                encode::query_publisher_sequence_response(self.out.buf(), correlation_id, c, sequence);
            }
            F::DeletePublisher { correlation_id, publisher_id } => {
                let c = match self.publishers.remove(publisher_id) {
                    Some(p) => {
                        self.unwatch_unused(&p.stream.name);
                        code::OK
                    }
                    None => code::PUBLISHER_DOES_NOT_EXIST,
                };
                encode::simple_response(self.out.buf(), key::DELETE_PUBLISHER, correlation_id, c);
            }
            F::Subscribe { correlation_id, subscription_id, stream, offset, credit, properties } => {
                let c = self.subscribe(subscription_id, &stream, offset, credit, &properties);
                encode::simple_response(self.out.buf(), key::SUBSCRIBE, correlation_id, c);
            }
            F::Credit { subscription_id, credit } => self.credit(subscription_id, credit),
            F::Unsubscribe { correlation_id, subscription_id } => {
                let c = if self.drop_subscription(subscription_id) {
                    code::OK
                } else {
                    code::SUBSCRIPTION_ID_DOES_NOT_EXIST
                };
                encode::simple_response(self.out.buf(), key::UNSUBSCRIBE, correlation_id, c);
            }
            F::StoreOffset { reference, stream, offset } => self.store_offset(reference, &stream, offset).await,
            F::QueryOffset { correlation_id, reference, stream } => {
                let (c, offset) = match self.readable_stream(&stream) {
                    Ok(s) => match s.query_offset(&reference).await {
                        Ok(Some(o)) => (code::OK, o),
                        Ok(None) => (code::NO_OFFSET, 0),
                        Err(_) => (code::STREAM_DOES_NOT_EXIST, 0),
                    },
                    Err(c) => (c, 0),
                };
                encode::query_offset_response(self.out.buf(), correlation_id, c, offset);
            }
            F::ConsumerUpdateResponse { correlation_id, code: c, offset } => {
                self.consumer_update_answered(correlation_id, c, offset)
            }
            F::SaslHandshake { correlation_id } => {
                let mechanisms: Vec<&str> = self.server.protocol.mechanisms.iter().map(String::as_str).collect();
                encode::sasl_handshake_response(self.out.buf(), correlation_id, code::OK, &mechanisms);
            }
            F::SaslAuthenticate { correlation_id, mechanism, data } => {
                self.reauthenticate(correlation_id, &mechanism, &data).await
            }
            F::ResolveOffsetSpec { correlation_id, stream, offset, .. } => {
                let (c, at) = match self.readable_stream(&stream).map(|s| s.reader(offset)) {
                    Ok(Ok(r)) => (code::OK, r.start_offset()),
                    Ok(Err(_)) => (code::INTERNAL_ERROR, 0),
                    Err(c) => (c, 0),
                };
                encode::resolve_offset_spec_response(self.out.buf(), correlation_id, c, at);
            }
            other => management::command(self, other).await,
        }
    }

    /// A stream the user may read (0x10 before 0x02, as RabbitMQ checks).
    pub(super) fn readable_stream(&mut self, name: &str) -> Result<crate::stream::handle::StreamHandle, u16> {
        if !self.permitted(Access::Read, "queue", name) {
            return Err(code::ACCESS_REFUSED);
        }
        self.stream(name)
    }

    fn declare_publisher(&mut self, id: u8, reference: Option<ByteString>, stream: &str) -> u16 {
        if self.server.broker.disk_alarm.is_raised() {
            debug!(publisher = id, stream, "publisher refused during a resource alarm");
            return code::PRECONDITION_FAILED;
        }
        if !self.permitted(Access::Write, "queue", stream) {
            return code::ACCESS_REFUSED;
        }
        if let Some(t) = self.publishers.taken(id, stream, reference.as_deref()) {
            let what = if t == Taken::Id { "publisher id" } else { "reference" };
            debug!(publisher = id, stream, "publisher refused: its {what} is in use on this connection");
            return code::PRECONDITION_FAILED;
        }
        let handle = match self.stream(stream) {
            Ok(h) => h,
            Err(c) => return c,
        };
        self.watch(&handle);
        self.publishers.declare(id, handle, reference.map(|r| Arc::from(&*r)));
        code::OK
    }

    async fn publish(&mut self, id: u8, messages: Vec<PublishedMessage>) {
        if self.publishers.get(id).is_none() {
            let errors: Vec<(u64, u16)> =
                messages.iter().map(|m| (m.publishing_id, code::PUBLISHER_DOES_NOT_EXIST)).collect();
            encode::publish_error(self.out.buf(), id, &errors);
            return;
        }
        let Some((stream, cmd)) = self.publishers.prepare(id, messages) else { return };
        let StreamCmd::Publish { records, .. } = &cmd else { return };
        let ids: Vec<u64> = records.iter().map(|r| r.publishing_id).collect();
        // Waits while the stream's mailbox is full: the publisher is slowed down.
        if stream.send(cmd).await.is_err() {
            self.publishers.unsent(id, ids.len());
            let errors: Vec<(u64, u16)> = ids.iter().map(|i| (*i, code::STREAM_NOT_AVAILABLE)).collect();
            encode::publish_error(self.out.buf(), id, &errors);
        }
    }

    fn subscribe(&mut self, id: u8, stream: &str, offset: OffsetSpec, credit: u16, properties: &Properties) -> u16 {
        let handle = match self.readable_stream(stream) {
            Ok(h) => h,
            Err(c) => return c,
        };
        if self.subscriptions.contains(id) {
            return code::SUBSCRIPTION_ID_ALREADY_EXISTS;
        }
        let options = match Options::parse(properties.iter().map(|(k, v)| (&**k, &**v))) {
            Ok(o) => o,
            Err(NoName) => {
                debug!(subscription = id, stream, "a single active consumer needs a name");
                return code::PRECONDITION_FAILED;
            }
        };
        let sac = options.single_active.as_ref().map(|name| Sac {
            group: GroupKey {
                vhost: self.session().vhost.name().to_string(),
                stream: stream.to_string(),
                name: name.clone(),
            },
            active: false,
        });
        // A single active consumer reads only once active and told where to start.
        let reader = match &sac {
            Some(_) => None,
            None => match handle.reader(offset) {
                Ok(mut r) => {
                    r.set_filter(options.filter.clone());
                    Some(r)
                }
                Err(e) => {
                    warn!(stream, error = %e, "cannot open a stream reader");
                    return code::INTERNAL_ERROR;
                }
            },
        };
        debug!(subscription = id, stream, ?offset, credit, "subscribed");
        self.watch(&handle);
        let group = sac.as_ref().map(|s| s.group.clone());
        let new = New { stream: handle, offset, credit, filter: options.filter.clone(), reader, sac };
        self.subscriptions.insert(id, new);
        if let Some(group) = group {
            let index = management::partition_index(self, options.super_stream.as_deref(), stream);
            let conn = self.id;
            self.server.sac(|g| g.register(&group, index, conn, id));
        }
        code::OK
    }

    fn credit(&mut self, id: u8, credit: u16) {
        let Some(s) = self.subscriptions.get_mut(id) else {
            debug!(subscription = id, "credit for an unknown subscription");
            encode::credit_response(self.out.buf(), code::SUBSCRIPTION_ID_DOES_NOT_EXIST, id);
            return;
        };
        s.credit = s.credit.saturating_add(credit as u32);
        if s.reader.is_none() {
            // An inactive single active consumer: the credit is kept, the client told.
            encode::credit_response(self.out.buf(), code::PRECONDITION_FAILED, id);
        }
    }

    /// Fire and forget: no answer, not even on error (RabbitMQ).
    async fn store_offset(&mut self, reference: ByteString, stream: &str, offset: u64) {
        let reading = self.subscriptions.uses(stream);
        if !reading && !self.permitted(Access::Read, "queue", stream) {
            debug!(stream, "offset not stored: no read access");
            return;
        }
        if reference.is_empty() || reference.len() > crate::stream::log::tracking::MAX_REFERENCE {
            debug!(stream, "offset not stored: the reference must have 1 to 255 bytes");
            return;
        }
        if let Ok(s) = self.stream(stream) {
            let _ = s.send(StreamCmd::StoreOffset { reference: reference.to_string(), offset }).await;
        }
    }

    /// A single-active-consumer notice from the node's groups: tell the client (ConsumerUpdate)
    /// and, when deactivated, stop reading.
    pub(super) fn on_notice(&mut self, n: Notice) {
        let Some(s) = self.subscriptions.get_mut(n.subscription_id) else { return };
        let Some(sac) = s.sac.as_mut().filter(|sac| sac.group == n.group) else { return };
        sac.active = n.active;
        if !n.active {
            s.reader = None;
        }
        let pending = PendingUpdate {
            subscription_id: n.subscription_id,
            generation: s.generation,
            group: n.group,
            stepping_down: n.stepping_down,
        };
        debug!(subscription = n.subscription_id, active = n.active, "consumer update");
        let correlation_id = self.proto.next_correlation_id();
        encode::consumer_update(self.out.buf(), correlation_id, n.subscription_id, n.active);
        self.subscriptions.update_sent(correlation_id, pending);
    }

    /// The client answered a ConsumerUpdate: an active consumer starts reading where it says
    /// (or where it subscribed); one that stepped down lets the group's next one in.
    fn consumer_update_answered(&mut self, correlation_id: u32, c: u16, offset: Option<OffsetSpec>) {
        if c != code::OK {
            debug!(code = c, "consumer update answered with an error code");
        }
        let Some(p) = self.subscriptions.pending_updates.remove(&correlation_id) else {
            debug!(correlation_id, "answer to no outstanding consumer update");
            return;
        };
        let Some(s) = self.subscriptions.get_mut(p.subscription_id).filter(|s| s.generation == p.generation) else {
            return;
        };
        let active = s.sac.as_ref().is_some_and(|sac| sac.active);
        if active {
            let spec = offset.unwrap_or(s.offset);
            match s.stream.reader(spec) {
                Ok(mut r) => {
                    r.set_filter(s.filter.clone());
                    s.reader = Some(r);
                    s.waiting = false;
                }
                Err(e) => warn!(stream = %s.stream.name, error = %e, "cannot open a stream reader"),
            }
        } else if p.stepping_down {
            self.server.sac(|g| ((), g.activate(&p.group)));
        }
    }

    /// SaslAuthenticate on an open connection: the same user with the same mechanism renews
    /// its credentials; anything else fails and the connection closes.
    async fn reauthenticate(&mut self, correlation_id: u32, mechanism: &str, data: &[u8]) {
        let n = self.proto.negotiated();
        let (user, current) = (n.user.clone(), n.mechanism.clone());
        let credentials = match mechanism {
            "PLAIN" => crate::connection::handshake::parse_plain(data),
            "AMQPLAIN" => crate::connection::handshake::parse_amqplain(data),
            _ => None,
        };
        let c = match credentials {
            _ if mechanism != current => code::SASL_CANNOT_CHANGE_MECHANISM,
            None => code::SASL_ERROR,
            Some((u, _)) if u != user => code::SASL_CANNOT_CHANGE_USERNAME,
            Some((u, p)) => match self.check_login(mechanism, &u, &p).await {
                AuthOutcome::Accepted => code::OK,
                AuthOutcome::LoopbackOnly => code::SASL_AUTHENTICATION_FAILURE_LOOPBACK,
                AuthOutcome::Refused => code::AUTHENTICATION_FAILURE,
            },
        };
        encode::sasl_authenticate_response(self.out.buf(), correlation_id, c, &[]);
        if c != code::OK {
            debug!(code = c, "re-authentication failed: connection closed");
            self.terminate = true;
        }
    }
}
