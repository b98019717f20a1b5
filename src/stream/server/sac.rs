//! Single active consumer: among the subscriptions sharing a name on a stream (a group), one
//! gets messages, the others wait to take over. RabbitMQ 3.11+'s `rabbit_stream_sac_coordinator`
//! rules, as plain data (no I/O; the connections act on the [`Notice`]s):
//!
//! * a group is (vhost, stream, name); its consumers are kept in the order they subscribed;
//! * on a plain stream the first consumer is active; when the active one leaves, the next in
//!   order becomes active;
//! * on a partition of a super stream (subscription property `super-stream`) the active one is
//!   the consumer at `partition index % consumers`, so a group spread over the partitions of a
//!   super stream shares them out. When a newcomer or a departure moves that choice, the active
//!   consumer is first told to step down (`active: false, stepping_down: true`); once its client
//!   answered (or it is gone) the connection calls [`Groups::activate`], which names the new
//!   one. Until then the group has no active consumer.
//!
//! A notice with `active: true` makes its connection send ConsumerUpdate(active) and start
//! reading where the client's answer says.

use std::collections::HashMap;

/// A group: (vhost, stream, consumer name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub vhost: String,
    pub stream: String,
    pub name: String,
}

/// One subscription of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    connection: u64,
    subscription_id: u8,
    active: bool,
    /// Told to step down, its answer not in yet.
    stepping_down: bool,
}

/// What a connection must tell one of its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub connection: u64,
    pub subscription_id: u8,
    pub group: GroupKey,
    pub active: bool,
    /// It was active and steps down so that another one takes over: once the client has
    /// answered the ConsumerUpdate, [`Groups::activate`] the group.
    pub stepping_down: bool,
}

#[derive(Debug)]
struct Group {
    /// The stream's place among its super stream's partitions; -1: not a partition.
    partition_index: i64,
    members: Vec<Member>,
}

impl Group {
    fn active(&self) -> Option<usize> {
        self.members.iter().position(|m| m.active)
    }

    /// A partition group's rightful active consumer.
    fn chosen(&self) -> usize {
        (self.partition_index.max(0) as usize) % self.members.len()
    }

    fn notice(&self, key: &GroupKey, i: usize, active: bool, stepping_down: bool) -> Notice {
        let m = self.members[i];
        Notice {
            connection: m.connection,
            subscription_id: m.subscription_id,
            group: key.clone(),
            active,
            stepping_down,
        }
    }

    /// After a change in a partition group: if the active consumer is no longer the chosen one,
    /// it steps down.
    fn rebalance(&mut self, key: &GroupKey) -> Vec<Notice> {
        match self.active() {
            Some(a) if a != self.chosen() => {
                self.members[a].active = false;
                self.members[a].stepping_down = true;
                vec![self.notice(key, a, false, true)]
            }
            _ => Vec::new(),
        }
    }
}

/// Every single-active-consumer group of the node.
#[derive(Debug, Default)]
pub struct Groups {
    groups: HashMap<GroupKey, Group>,
}

impl Groups {
    /// A new consumer joins `key` (created with `partition_index`, -1 when not a super stream
    /// partition). Returns whether it is active, and what to tell whom (the newcomer included).
    pub fn register(
        &mut self,
        key: &GroupKey,
        partition_index: i64,
        connection: u64,
        subscription_id: u8,
    ) -> (bool, Vec<Notice>) {
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group { partition_index, members: Vec::new() });
        let first = group.members.is_empty();
        let active = if group.partition_index < 0 { group.active().is_none() } else { first };
        group.members.push(Member { connection, subscription_id, active, stepping_down: false });
        let i = group.members.len() - 1;
        if active {
            return (true, vec![group.notice(key, i, true, false)]);
        }
        let notices = if group.partition_index < 0 { Vec::new() } else { group.rebalance(key) };
        (false, notices)
    }

    /// A consumer leaves its group (unsubscribed, its stream deleted, its connection closed).
    pub fn unregister(&mut self, key: &GroupKey, connection: u64, subscription_id: u8) -> Vec<Notice> {
        let Some(group) = self.groups.get_mut(key) else { return Vec::new() };
        let Some(i) =
            group.members.iter().position(|m| m.connection == connection && m.subscription_id == subscription_id)
        else {
            return Vec::new();
        };
        let gone = group.members.remove(i);
        if group.members.is_empty() {
            self.groups.remove(key);
            return Vec::new();
        }
        if group.partition_index < 0 {
            if !gone.active {
                return Vec::new();
            }
            group.members[0].active = true;
            return vec![group.notice(key, 0, true, false)];
        }
        match group.active() {
            Some(_) => group.rebalance(key),
            // The active one, or one stepping down that will never answer, left.
            None if gone.active || gone.stepping_down => {
                let c = group.chosen();
                group.members[c].active = true;
                vec![group.notice(key, c, true, false)]
            }
            // A former active one is stepping down: its answer activates the next.
            None => Vec::new(),
        }
    }

    /// The consumer that stepped down has answered: make the group's chosen consumer active.
    pub fn activate(&mut self, key: &GroupKey) -> Vec<Notice> {
        let Some(group) = self.groups.get_mut(key) else { return Vec::new() };
        if group.active().is_some() {
            return Vec::new();
        }
        let c = if group.partition_index < 0 { 0 } else { group.chosen() };
        for m in &mut group.members {
            m.stepping_down = false;
        }
        group.members[c].active = true;
        vec![group.notice(key, c, true, false)]
    }

    /// Whether the consumer is the active one of its group.
    pub fn is_active(&self, key: &GroupKey, connection: u64, subscription_id: u8) -> bool {
        self.groups.get(key).is_some_and(|g| {
            g.members.iter().any(|m| m.connection == connection && m.subscription_id == subscription_id && m.active)
        })
    }

    /// Number of groups (for tests and leak checks).
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stream: &str) -> GroupKey {
        GroupKey { vhost: "/".into(), stream: stream.into(), name: "app".into() }
    }

    fn who(n: &[Notice]) -> Vec<(u64, u8, bool, bool)> {
        n.iter().map(|n| (n.connection, n.subscription_id, n.active, n.stepping_down)).collect()
    }

    #[test]
    fn plain_stream_first_is_active_next_takes_over() {
        let mut g = Groups::default();
        let k = key("s");
        let (a, n) = g.register(&k, -1, 1, 0);
        assert!(a);
        assert_eq!(who(&n), [(1, 0, true, false)]);
        let (a, n) = g.register(&k, -1, 2, 0);
        assert!(!a && n.is_empty(), "a newcomer waits, nobody is told");
        let (a, _) = g.register(&k, -1, 3, 5);
        assert!(!a);
        // A waiting one leaves: nothing changes.
        assert!(g.unregister(&k, 3, 5).is_empty());
        // The active one leaves: the next in order takes over.
        assert_eq!(who(&g.unregister(&k, 1, 0)), [(2, 0, true, false)]);
        assert!(g.is_active(&k, 2, 0));
        assert!(g.unregister(&k, 2, 0).is_empty());
        assert!(g.is_empty(), "an empty group is dropped");
        assert!(g.unregister(&k, 9, 9).is_empty(), "unknown: nothing");
    }

    #[test]
    fn groups_are_per_stream_and_name() {
        let mut g = Groups::default();
        assert!(g.register(&key("a"), -1, 1, 0).0);
        assert!(g.register(&key("b"), -1, 1, 1).0);
        let other = GroupKey { name: "other".into(), ..key("a") };
        assert!(g.register(&other, -1, 2, 0).0);
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn partitions_share_out_by_index() {
        let mut g = Groups::default();
        // Partition 1 of a super stream: with two consumers, the second one is chosen.
        let k = key("invoices-1");
        let (a, n) = g.register(&k, 1, 1, 0);
        assert!(a);
        assert_eq!(who(&n), [(1, 0, true, false)]);
        let (a, n) = g.register(&k, 1, 2, 0);
        assert!(!a);
        assert_eq!(who(&n), [(1, 0, false, true)], "the first steps down");
        assert!(!g.is_active(&k, 1, 0) && !g.is_active(&k, 2, 0), "nobody until it answered");
        assert_eq!(who(&g.activate(&k)), [(2, 0, true, false)]);
        assert!(g.activate(&k).is_empty(), "already active");
        // The chosen one leaves: index 1 % 1 = the remaining first one.
        assert_eq!(who(&g.unregister(&k, 2, 0)), [(1, 0, true, false)]);
    }

    #[test]
    fn partition_departure_of_a_waiting_one_can_move_the_choice() {
        let mut g = Groups::default();
        let k = key("p-2");
        g.register(&k, 2, 1, 0); // active
        let (_, n) = g.register(&k, 2, 2, 0); // 2 % 2 = 0: stays
        assert!(n.is_empty());
        let (_, n) = g.register(&k, 2, 3, 0); // 2 % 3 = 2: the first steps down
        assert_eq!(who(&n), [(1, 0, false, true)]);
        assert_eq!(who(&g.activate(&k)), [(3, 0, true, false)]);
        // The second leaves: 2 % 2 = 0 is consumer 1, so 3 steps down.
        assert_eq!(who(&g.unregister(&k, 2, 0)), [(3, 0, false, true)]);
        assert_eq!(who(&g.activate(&k)), [(1, 0, true, false)]);
        // A stepping-down consumer that leaves before answering: its departure picks the next.
        let (_, n) = g.register(&k, 2, 4, 0); // 2 % 3 = 2: consumer 1 steps down for 4
        assert_eq!(who(&n), [(1, 0, false, true)]);
        assert_eq!(who(&g.unregister(&k, 1, 0)), [(3, 0, true, false)], "2 % 2 = 0 of [3, 4]");
    }
}
