//! Users and authentication: who may log in, with which password, from where. The handshake
//! (`connection::handshake`) asks [`Users::authenticate`]; nothing here does I/O.
//!
//! Users come from the config file: the default user (`auth.default_user` / `default_pass`,
//! `guest`/`guest` unless set) and any number of `[[auth.users]]` with a RabbitMQ-compatible
//! `password_hash` (as exported in a RabbitMQ definitions file) or a plain `password` (hashed
//! when the config is read, never kept).

pub mod hashing;
pub mod permissions;

use std::collections::HashMap;

use crate::config::AuthConfig;
use crate::definitions::{Definitions, UserLimits};
use hashing::{HashingAlgorithm, PasswordHash};

/// RabbitMQ's user tags.
pub const TAGS: &[&str] = &["administrator", "monitoring", "management", "policymaker", "impersonator"];

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub tags: Vec<String>,
    /// None: no password login (certificate-only users).
    password: Option<PasswordHash>,
    /// May only connect from a loopback address (RabbitMQ's `loopback_users`, `guest` by default).
    pub loopback_only: bool,
    pub limits: UserLimits,
}

/// Why a login was refused (for the log line; the client only learns that it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    WrongPassword,
    NoPassword,
    LoopbackOnly,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownUser => "no such user",
            Refusal::WrongPassword => "wrong password",
            Refusal::NoPassword => "the user has no password (certificate login only)",
            Refusal::LoopbackOnly => "the user can only connect via localhost",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Users {
    by_name: HashMap<String, User>,
    /// (user, vhost) → its permissions.
    permissions: HashMap<(String, String), std::sync::Arc<permissions::Permission>>,
}

impl Users {
    /// The users and permissions of `defs`, with the config's loopback rules. An entry that
    /// cannot be used (a bad hash, an unknown tag, permissions of a missing user, a pattern that
    /// is no regular expression) is an error naming it.
    pub fn build(defs: &Definitions, auth: &AuthConfig) -> Result<Users, String> {
        let mut users = Users::default();
        for u in &defs.users {
            let what = format!("user '{}'", u.name);
            let algorithm = HashingAlgorithm::parse(&u.hashing_algorithm)
                .ok_or_else(|| format!("{what}: unknown hashing_algorithm '{}'", u.hashing_algorithm))?;
            let password = match &u.password_hash {
                Some(h) => Some(PasswordHash::parse(algorithm, h).map_err(|e| format!("{what}: {e}"))?),
                None => None,
            };
            if let Some(t) = u.tags.iter().find(|t| !TAGS.contains(&t.as_str())) {
                return Err(format!("{what}: unknown tag '{t}' (known: {})", TAGS.join(", ")));
            }
            let loopback_only = (u.name == auth.default_user && auth.default_user_loopback_only)
                || auth.loopback_users.contains(&u.name)
                || auth.users.iter().any(|c| c.name == u.name && c.loopback_only);
            users.by_name.insert(
                u.name.clone(),
                User { name: u.name.clone(), tags: u.tags.clone(), password, loopback_only, limits: u.limits },
            );
        }
        for p in &defs.permissions {
            if !users.by_name.contains_key(&p.user) {
                return Err(format!("permissions for user '{}' in vhost '{}': no such user", p.user, p.vhost));
            }
            let compiled = permissions::Permission::compile(p)?;
            users.permissions.insert((p.user.clone(), p.vhost.clone()), std::sync::Arc::new(compiled));
        }
        for t in &defs.topic_permissions {
            let Some(p) = users.permissions.get_mut(&(t.user.clone(), t.vhost.clone())) else {
                return Err(format!(
                    "topic permissions for user '{}' in vhost '{}': the user has no permissions there",
                    t.user, t.vhost
                ));
            };
            std::sync::Arc::make_mut(p).add_topic(t)?;
        }
        Ok(users)
    }

    /// The users of a config file alone (a first start without an import file).
    pub fn from_config(auth: &AuthConfig) -> Result<Users, String> {
        let config = crate::config::Config { auth: auth.clone(), ..Default::default() };
        Self::build(&crate::definitions::at_start(&config, None, None)?, auth)
    }

    /// Whether `user` may open `vhost` (it has permissions there, as RabbitMQ requires).
    pub fn may_open(&self, user: &str, vhost: &str) -> bool {
        self.permissions.contains_key(&(user.to_string(), vhost.to_string()))
    }

    /// The permissions of `user` in `vhost` (None: it may not open it).
    pub fn permission(&self, user: &str, vhost: &str) -> Option<std::sync::Arc<permissions::Permission>> {
        self.permissions.get(&(user.to_string(), vhost.to_string())).cloned()
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    /// Check an EXTERNAL login: the user named by a verified client certificate must exist
    /// (it needs no password) and may be loopback-only.
    pub fn authenticate_external(&self, name: &str, peer_is_loopback: bool) -> Result<&User, Refusal> {
        let user = self.by_name.get(name).ok_or(Refusal::UnknownUser)?;
        if user.loopback_only && !peer_is_loopback {
            return Err(Refusal::LoopbackOnly);
        }
        Ok(user)
    }

    /// Check a password login (PLAIN, AMQPLAIN).
    pub fn authenticate(&self, name: &str, password: &str, peer_is_loopback: bool) -> Result<&User, Refusal> {
        let user = self.by_name.get(name).ok_or(Refusal::UnknownUser)?;
        let hash = user.password.as_ref().ok_or(Refusal::NoPassword)?;
        if !hash.verify(password) {
            return Err(Refusal::WrongPassword);
        }
        if user.loopback_only && !peer_is_loopback {
            return Err(Refusal::LoopbackOnly);
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, UserConfig};

    fn user(name: &str) -> UserConfig {
        UserConfig { name: name.into(), ..Default::default() }
    }

    #[test]
    fn default_and_configured_users_log_in() {
        let mut a = AuthConfig::default();
        a.users.push(UserConfig {
            password_hash: Some("F0F+DkwlOADPqn8qR8a4yfqSCf0V+zMO74HfwT2nxsb+5lEs".into()),
            tags: vec!["monitoring".into()],
            ..user("alice")
        });
        a.users.push(UserConfig {
            password: Some("pw".into()),
            hashing_algorithm: "rabbit_password_hashing_sha512".into(),
            ..user("bob")
        });
        a.users.push(user("cert-only"));
        let users = Users::from_config(&a).unwrap();
        assert_eq!(users.authenticate("guest", "guest", true).unwrap().name, "guest");
        assert_eq!(users.authenticate("guest", "guest", false).unwrap_err(), Refusal::LoopbackOnly);
        assert_eq!(users.authenticate("guest", "nope", true).unwrap_err(), Refusal::WrongPassword);
        assert_eq!(users.authenticate("alice", "S3cret!", false).unwrap().tags, ["monitoring"]);
        assert_eq!(users.authenticate("bob", "pw", false).unwrap().name, "bob");
        assert_eq!(users.authenticate("cert-only", "", true).unwrap_err(), Refusal::NoPassword);
        assert_eq!(users.authenticate("carol", "x", true).unwrap_err(), Refusal::UnknownUser);
    }

    #[test]
    fn vhost_access_follows_permissions() {
        let perm = |user: &str, vhost: &str| crate::config::PermissionConfig {
            user: user.into(),
            vhost: vhost.into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        let mut a = AuthConfig { vhosts: vec!["/".into(), "b".into()], ..Default::default() };
        a.users.push(UserConfig { password: Some("pw".into()), ..user("alice") });
        a.permissions.push(perm("alice", "b"));
        let users = Users::from_config(&a).unwrap();
        assert!(
            users.may_open("guest", "/") && users.may_open("guest", "b"),
            "the default user: every configured vhost"
        );
        assert!(users.may_open("alice", "b") && !users.may_open("alice", "/"));
        assert!(!users.may_open("nobody", "/"));
        // Permissions for a user that does not exist are a config error.
        a.permissions.push(perm("ghost", "/"));
        assert!(Users::from_config(&a).unwrap_err().contains("'ghost'"));
        a.permissions.pop();
        // A definitions file that brings its own default user brings its permissions too.
        let imported = Definitions {
            users: vec![crate::definitions::UserDef {
                name: "guest".into(),
                password_hash: Some(PasswordHash::generate(HashingAlgorithm::Sha256, "g").encode()),
                hashing_algorithm: "rabbit_password_hashing_sha256".into(),
                ..Default::default()
            }],
            permissions: vec![perm("guest", "b")],
            ..Default::default()
        };
        let config = crate::config::Config { auth: a.clone(), ..Default::default() };
        let users = Users::build(&crate::definitions::at_start(&config, None, Some(imported)).unwrap(), &a).unwrap();
        assert!(users.may_open("guest", "b") && !users.may_open("guest", "/"));
        assert!(users.authenticate("guest", "g", true).is_ok(), "the imported password");
        assert_eq!(
            users.authenticate("guest", "g", false).unwrap_err(),
            Refusal::LoopbackOnly,
            "the loopback rule stays"
        );
    }

    #[test]
    fn loopback_users_may_only_connect_locally() {
        let mut a = AuthConfig {
            loopback_users: vec!["alice".into()],
            default_user_loopback_only: false,
            ..Default::default()
        };
        a.users.push(UserConfig { password: Some("pw".into()), ..user("alice") });
        a.users.push(UserConfig { password: Some("pw".into()), ..user("bob") });
        let users = Users::from_config(&a).unwrap();
        assert_eq!(users.authenticate("alice", "pw", false).unwrap_err(), Refusal::LoopbackOnly);
        assert!(users.authenticate("alice", "pw", true).is_ok());
        assert!(users.authenticate("bob", "pw", false).is_ok());
        assert!(users.authenticate("guest", "guest", false).is_ok(), "default_user_loopback_only = false");
    }

    #[test]
    fn unusable_entries_are_config_errors() {
        let cases: Vec<(UserConfig, &str)> = vec![
            (UserConfig { password: Some("a".into()), password_hash: Some("b".into()), ..user("u") }, "not both"),
            (UserConfig { hashing_algorithm: "bcrypt".into(), ..user("u") }, "unknown hashing_algorithm"),
            (UserConfig { password_hash: Some("AAAA".into()), ..user("u") }, "bytes"),
            (UserConfig { tags: vec!["root".into()], ..user("u") }, "unknown tag 'root'"),
            (user("guest"), "defined twice"),
            (user(""), "empty name"),
        ];
        for (entry, want) in cases {
            let mut a = AuthConfig::default();
            a.users.push(entry);
            let e = Users::from_config(&a).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
