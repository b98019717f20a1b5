//! Users and authentication: who may log in, with which password, from where. The handshake
//! (`connection::handshake`) asks [`Users::authenticate`]; nothing here does I/O.
//!
//! Users come from the config file: the default user (`auth.default_user` / `default_pass`,
//! `guest`/`guest` unless set) and any number of `[[auth.users]]` with a RabbitMQ-compatible
//! `password_hash` (as exported in a RabbitMQ definitions file) or a plain `password` (hashed
//! when the config is read, never kept).

pub mod definitions;
pub mod hashing;

use std::collections::HashMap;

use crate::config::AuthConfig;
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

#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, User>,
}

impl Users {
    /// The users of the config file; an entry that cannot be used is an error naming it.
    pub fn from_config(auth: &AuthConfig) -> Result<Users, String> {
        Self::with_imported(auth, &[])
    }

    /// The config file's users and those of a definitions file (`imported`). An imported user
    /// with the default user's name replaces it (keeping its loopback rule), as importing
    /// RabbitMQ definitions replaces `guest`; any other name given twice is an error.
    pub fn with_imported(auth: &AuthConfig, imported: &[crate::config::UserConfig]) -> Result<Users, String> {
        let mut users = Users::default();
        users.by_name.insert(
            auth.default_user.clone(),
            User {
                name: auth.default_user.clone(),
                tags: vec!["administrator".into()],
                password: Some(PasswordHash::generate(HashingAlgorithm::Sha256, &auth.default_pass)),
                loopback_only: auth.default_user_loopback_only,
            },
        );
        let imported = imported.iter().map(|u| {
            let mut u = u.clone();
            u.loopback_only = u.name == auth.default_user && auth.default_user_loopback_only;
            (u, "definitions file user")
        });
        let configured = auth.users.iter().map(|u| (u.clone(), "auth.users entry"));
        let mut replaced_default = false;
        for (u, source) in imported.chain(configured) {
            let what = format!("{source} '{}'", u.name);
            if u.name.is_empty() {
                return Err("an auth.users entry has an empty name".into());
            }
            let algorithm = HashingAlgorithm::parse(&u.hashing_algorithm).ok_or_else(|| {
                format!(
                    "{what}: unknown hashing_algorithm '{}' (use rabbit_password_hashing_sha256, _sha512 or _md5)",
                    u.hashing_algorithm
                )
            })?;
            let password = match (&u.password_hash, &u.password) {
                (Some(_), Some(_)) => return Err(format!("{what}: give password_hash or password, not both")),
                (Some(h), None) => Some(PasswordHash::parse(algorithm, h).map_err(|e| format!("{what}: {e}"))?),
                (None, Some(p)) => Some(PasswordHash::generate(algorithm, p)),
                (None, None) => None,
            };
            if let Some(t) = u.tags.iter().find(|t| !TAGS.contains(&t.as_str())) {
                return Err(format!("{what}: unknown tag '{t}' (known: {})", TAGS.join(", ")));
            }
            let user = User { name: u.name.clone(), tags: u.tags.clone(), password, loopback_only: u.loopback_only };
            let replaces_default =
                u.name == auth.default_user && !replaced_default && source.starts_with("definitions");
            if users.by_name.insert(u.name.clone(), user).is_some() && !replaces_default {
                return Err(format!("{what}: the user is defined twice (or is the default user)"));
            }
            replaced_default |= replaces_default;
        }
        Ok(users)
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
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
