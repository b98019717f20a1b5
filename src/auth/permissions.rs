//! A user's configure / write / read permissions in one vhost (RabbitMQ's `set_permissions`),
//! checked per operation with RabbitMQ's texts. Patterns are regular expressions matched
//! anywhere in the resource name (as RabbitMQ's `re:run`; anchor them with `^`/`$`); an empty
//! pattern grants nothing. Which operation needs which (measured on RabbitMQ 3.10.8):
//!
//! | operation | needs |
//! |---|---|
//! | queue.declare / exchange.declare (not passive), queue.delete, exchange.delete | configure on it |
//! | queue.bind / unbind | write on the queue, then read on the exchange |
//! | exchange.bind / unbind | write on the destination, then read on the source |
//! | basic.publish | write on the exchange (`""` is named `amq.default`), before it is looked up |
//! | basic.get, basic.consume, queue.purge | read on the queue, before it is looked up |

use regex::Regex;

use std::collections::HashMap;

use crate::config::{PermissionConfig, TopicPermissionConfig};
use crate::error::{AmqpError, AmqpResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// One pattern: everything, nothing, or a regular expression.
#[derive(Debug, Clone)]
enum Pattern {
    All,
    Nothing,
    Regex(Regex),
}

impl Pattern {
    fn compile(p: &str) -> Result<Self, String> {
        Ok(match p {
            ".*" => Pattern::All,
            "" => Pattern::Nothing,
            p => Pattern::Regex(Regex::new(p).map_err(|e| format!("'{p}' is not a regular expression ({e})"))?),
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Nothing => false,
            Pattern::Regex(r) => r.is_match(name),
        }
    }
}

/// A user's permissions in one vhost.
#[derive(Debug, Clone)]
pub struct Permission {
    user: String,
    vhost: String,
    configure: Pattern,
    write: Pattern,
    read: Pattern,
    /// Topic exchange → (write, read) patterns on routing and binding keys.
    topics: HashMap<String, (Pattern, Pattern)>,
}

impl Permission {
    pub fn compile(p: &PermissionConfig) -> Result<Self, String> {
        let what = |e: String| format!("permissions of user '{}' in vhost '{}': {e}", p.user, p.vhost);
        Ok(Permission {
            user: p.user.clone(),
            vhost: p.vhost.clone(),
            configure: Pattern::compile(&p.configure).map_err(what)?,
            write: Pattern::compile(&p.write).map_err(what)?,
            read: Pattern::compile(&p.read).map_err(what)?,
            topics: HashMap::new(),
        })
    }

    /// No access at all (a user whose permissions were cleared while connected).
    pub fn none(user: &str, vhost: &str) -> Self {
        Permission {
            user: user.into(),
            vhost: vhost.into(),
            configure: Pattern::Nothing,
            write: Pattern::Nothing,
            read: Pattern::Nothing,
            topics: HashMap::new(),
        }
    }

    /// Add a topic permission (`{username}` and `{vhost}` expanded).
    pub fn add_topic(&mut self, t: &TopicPermissionConfig) -> Result<(), String> {
        let what = |e: String| {
            format!("topic permissions of user '{}' in vhost '{}' on '{}': {e}", t.user, t.vhost, t.exchange)
        };
        let expand = |p: &str| p.replace("{username}", &self.user).replace("{vhost}", &self.vhost);
        let write = Pattern::compile(&expand(&t.write)).map_err(what)?;
        let read = Pattern::compile(&expand(&t.read)).map_err(what)?;
        self.topics.insert(t.exchange.clone(), (write, read));
        Ok(())
    }

    /// Topic exchanges: whether this routing key (write: publish) or binding key (read: bind,
    /// unbind) is allowed on `exchange`; exchanges without a topic permission allow any.
    pub fn check_topic(&self, access: Access, exchange: &str, key: &str) -> AmqpResult<()> {
        let Some((write, read)) = self.topics.get(exchange) else { return Ok(()) };
        let pattern = if access == Access::Write { write } else { read };
        if pattern.matches(key) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format_args!(
            "access to topic '{key}' in exchange '{exchange}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )))
    }

    /// Whether `access` to the `kind` ("queue" or "exchange") named `name` is granted; if not,
    /// RabbitMQ's 403.
    pub fn check(&self, access: Access, kind: &str, name: &str) -> AmqpResult<()> {
        let name = if kind == "exchange" && name.is_empty() { "amq.default" } else { name };
        let pattern = match access {
            Access::Configure => &self.configure,
            Access::Write => &self.write,
            Access::Read => &self.read,
        };
        if pattern.matches(name) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format_args!(
            "access to {kind} '{name}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(configure: &str, write: &str, read: &str) -> Permission {
        Permission::compile(&PermissionConfig {
            user: "bob".into(),
            vhost: "/".into(),
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        })
        .unwrap()
    }

    #[test]
    fn topic_permissions_expand_variables_and_leave_other_exchanges_alone() {
        let mut p = perm(".*", ".*", ".*");
        p.add_topic(&TopicPermissionConfig {
            user: "bob".into(),
            vhost: "/".into(),
            exchange: "amq.topic".into(),
            write: "^{username}\\.{vhost}".into(),
            read: "".into(),
        })
        .unwrap();
        assert!(p.check_topic(Access::Write, "amq.topic", "bob./").is_ok());
        assert_eq!(
            p.check_topic(Access::Write, "amq.topic", "eve./").unwrap_err().text,
            "ACCESS_REFUSED - access to topic 'eve./' in exchange 'amq.topic' in vhost '/' refused for user 'bob'"
        );
        assert!(p.check_topic(Access::Read, "amq.topic", "anything").is_err(), "'' grants nothing");
        assert!(p.check_topic(Access::Write, "other", "eve").is_ok(), "no topic permission: not restricted");
    }

    #[test]
    fn patterns_and_texts_as_rabbitmq() {
        let p = perm("^bob-.*", "^bob-", "bob");
        assert!(p.check(Access::Configure, "queue", "bob-1").is_ok());
        let e = p.check(Access::Configure, "queue", "notbob").unwrap_err();
        assert_eq!(e.text, "ACCESS_REFUSED - access to queue 'notbob' in vhost '/' refused for user 'bob'");
        // Unanchored unless the pattern anchors itself.
        assert!(p.check(Access::Read, "queue", "notbob").is_ok());
        let e = p.check(Access::Write, "exchange", "").unwrap_err();
        assert_eq!(e.text, "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'bob'");
        let none = perm("", ".*", ".*");
        assert!(none.check(Access::Configure, "queue", "").is_err(), "an empty pattern grants nothing");
        assert!(none.check(Access::Write, "exchange", "x").is_ok());
        assert!(
            Permission::compile(&PermissionConfig {
                user: "u".into(),
                vhost: "/".into(),
                configure: "(".into(),
                write: ".*".into(),
                read: ".*".into()
            })
            .unwrap_err()
            .contains("not a regular expression")
        );
    }
}
