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

use crate::config::PermissionConfig;
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
        })
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
