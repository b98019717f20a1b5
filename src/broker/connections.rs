//! The broker's list of open connections and what each is doing, as RabbitMQ reports it
//! (`rabbitmqctl list_connections state`, the management API's `state` field). Connection
//! tasks register themselves once open and update their state; readers (tests, the future
//! management API) take snapshots. Nothing here is on the per-message path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// A connection's state, named as RabbitMQ names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    Running = 0,
    /// Held by publisher flow control: a queue it publishes to admits no more for now.
    Flow = 1,
    /// Publishing during a resource alarm: its socket is not read until the alarm clears.
    Blocked = 2,
    Closing = 3,
}

impl ConnState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Running => "running",
            ConnState::Flow => "flow",
            ConnState::Blocked => "blocked",
            ConnState::Closing => "closing",
        }
    }

    fn from_u8(v: u8) -> ConnState {
        match v {
            1 => ConnState::Flow,
            2 => ConnState::Blocked,
            3 => ConnState::Closing,
            _ => ConnState::Running,
        }
    }
}

/// One channel as the management API shows it.
#[derive(Debug, Clone, Default)]
pub struct ChannelSummary {
    pub number: u16,
    pub consumer_count: usize,
    pub prefetch_count: u32,
    pub global_prefetch_count: u32,
    pub messages_unacknowledged: usize,
    pub messages_unconfirmed: usize,
    pub confirm: bool,
    pub transactional: bool,
    pub counters: crate::stats::LocalCounters,
}

/// What a connection negotiated (for the management API).
#[derive(Debug, Clone, Default)]
pub struct ConnectionDetails {
    /// The broker's end of the socket.
    pub local: Option<SocketAddr>,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
    pub client_properties: amq_protocol::types::FieldTable,
    pub auth_mechanism: String,
    pub tls: bool,
    /// Milliseconds since the Unix epoch.
    pub connected_at: u64,
    /// The connection's inbox (the management API asks it for its channels).
    pub inbox: Option<crate::queue::ConnInbox>,
    /// Its socket traffic.
    pub octets: Arc<crate::stats::Octets>,
    /// The protocol as RabbitMQ names it when not AMQP 0-9-1 (`stream`).
    pub protocol: Option<&'static str>,
}

/// What the broker knows of one open connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub user: String,
    pub vhost: String,
    pub details: ConnectionDetails,
    state: AtomicU8,
    /// Open channels (for the user's `max-channels`).
    channels: std::sync::atomic::AtomicUsize,
    /// Cancelled to make the connection close with 320 CONNECTION_FORCED and `close_reason`.
    closer: tokio_util::sync::CancellationToken,
    close_reason: Mutex<String>,
}

impl ConnectionInfo {
    /// Its open channels, as the connection task reports them (None: it did not answer).
    pub async fn channels_summary(&self) -> Option<Vec<ChannelSummary>> {
        let inbox = self.details.inbox.as_ref()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        inbox.send(crate::queue::ConnEvent::DescribeChannels { reply }).ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(2), rx).await.ok()?.ok()
    }

    /// RabbitMQ's connection name: `peer -> local`.
    pub fn name(&self) -> String {
        match self.details.local {
            Some(l) => format!("{} -> {}", self.peer, l),
            None => self.peer.to_string(),
        }
    }

    pub fn state(&self) -> ConnState {
        ConnState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: ConnState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn channels(&self) -> usize {
        self.channels.load(Ordering::Relaxed)
    }

    pub fn set_channels(&self, n: usize) {
        self.channels.store(n, Ordering::Relaxed);
    }

    /// Close the connection with 320 CONNECTION_FORCED and this text (a deleted vhost or
    /// user, the management API's close).
    pub fn force_close(&self, reason: &str) {
        *self.close_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
        self.closer.cancel();
    }

    /// Completes once [`Self::force_close`] was called; gives its text.
    pub async fn forced(&self) -> String {
        self.closer.cancelled().await;
        self.close_reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The open connections (after `connection.open-ok`).
#[derive(Debug, Default)]
pub struct Connections {
    map: Mutex<HashMap<u64, Arc<ConnectionInfo>>>,
}

/// Removes its connection from the list when dropped (however the connection task ends).
#[derive(Debug)]
pub struct Registration {
    list: Arc<Connections>,
    pub info: Arc<ConnectionInfo>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.list.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.info.id);
    }
}

impl Connections {
    pub fn register(self: &Arc<Self>, id: u64, peer: SocketAddr, user: &str, vhost: &str) -> Registration {
        self.register_with(id, peer, user, vhost, ConnectionDetails::default())
    }

    pub fn register_with(
        self: &Arc<Self>,
        id: u64,
        peer: SocketAddr,
        user: &str,
        vhost: &str,
        details: ConnectionDetails,
    ) -> Registration {
        let info = Arc::new(ConnectionInfo {
            id,
            peer,
            user: user.to_string(),
            vhost: vhost.to_string(),
            details,
            state: AtomicU8::new(ConnState::Running as u8),
            channels: Default::default(),
            closer: Default::default(),
            close_reason: Mutex::new(String::new()),
        });
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(id, info.clone());
        Registration { list: self.clone(), info }
    }

    /// The open connections, in no particular order.
    pub fn snapshot(&self) -> Vec<Arc<ConnectionInfo>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Force-close every connection for which `pred` holds (see [`ConnectionInfo::force_close`]).
    pub fn close_where(&self, pred: impl Fn(&ConnectionInfo) -> bool, reason: &str) -> usize {
        let hit: Vec<_> = self.snapshot().into_iter().filter(|c| pred(c)).collect();
        for c in &hit {
            c.force_close(reason);
        }
        hit.len()
    }

    /// Open channels of the connections for which `pred` holds.
    pub fn channels_where(&self, pred: impl Fn(&ConnectionInfo) -> bool) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|c| pred(c)).map(|c| c.channels()).sum()
    }

    /// Open connections for which `pred` holds.
    pub fn count_where(&self, pred: impl Fn(&ConnectionInfo) -> bool) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|c| pred(c)).count()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_lives_as_long_as_its_guard() {
        let list = Arc::new(Connections::default());
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        {
            let r = list.register(7, peer, "guest", "/");
            r.info.set_state(ConnState::Flow);
            let snap = list.snapshot();
            assert_eq!(snap.len(), 1);
            assert_eq!(snap[0].state().as_str(), "flow");
        }
        assert!(list.is_empty());
    }
}
