//! Users and virtual hosts from a RabbitMQ definitions file (`auth.definitions`, as RabbitMQ's
//! `load_definitions`): what `rabbitmqctl export_definitions` or the management UI's export
//! writes. Users keep their password hashes (RabbitMQ's format), so they log in with the same
//! passwords. Sections this version does not import yet are counted and reported, never
//! silently dropped.

use serde_json::Value;

use crate::config::{PermissionConfig, TopicPermissionConfig, UserConfig};

/// What a definitions file gives the broker at start.
#[derive(Debug, Default)]
pub struct Imported {
    pub users: Vec<UserConfig>,
    pub vhosts: Vec<String>,
    pub permissions: Vec<PermissionConfig>,
    pub topic_permissions: Vec<TopicPermissionConfig>,
    /// Non-empty sections not imported: (section, entries).
    pub not_imported: Vec<(String, usize)>,
}

/// Sections read here.
const IMPORTED: &[&str] = &["users", "vhosts", "permissions", "topic_permissions"];
/// Sections that describe the file rather than the broker.
const INFORMATIONAL: &[&str] = &["rabbit_version", "rabbitmq_version", "product_name", "product_version"];

fn text<'a>(entry: &'a Value, key: &str, what: &str) -> Result<&'a str, String> {
    entry.get(key).and_then(Value::as_str).ok_or_else(|| format!("{what} has no string \"{key}\""))
}

/// Parse the text of a definitions file.
pub fn parse(json: &str) -> Result<Imported, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON ({e})"))?;
    let top = v.as_object().ok_or("not a JSON object")?;
    let mut out = Imported::default();
    for (i, u) in top.get("users").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let what = format!("users[{i}]");
        let name = text(u, "name", &what)?.to_string();
        let what = format!("user '{name}'");
        // An empty hash is a user without a password (RabbitMQ exports it so).
        let password_hash = match u.get("password_hash") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("{what}: \"password_hash\" is not a string")),
        };
        let hashing_algorithm = match u.get("hashing_algorithm") {
            None => "rabbit_password_hashing_sha256".to_string(),
            Some(_) => text(u, "hashing_algorithm", &what)?.to_string(),
        };
        // A list since RabbitMQ 3.9; a comma-separated string before.
        let tags = match u.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|t| t.as_str().map(String::from).ok_or_else(|| format!("{what}: a tag is not a string")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("{what}: \"tags\" is neither a list nor a string")),
        };
        out.users.push(UserConfig { name, password_hash, hashing_algorithm, tags, ..Default::default() });
    }
    for (i, h) in top.get("vhosts").and_then(Value::as_array).into_iter().flatten().enumerate() {
        out.vhosts.push(text(h, "name", &format!("vhosts[{i}]"))?.to_string());
    }
    for (i, p) in top.get("permissions").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let what = format!("permissions[{i}]");
        let field = |k: &str| text(p, k, &what).map(String::from);
        out.permissions.push(PermissionConfig {
            user: field("user")?,
            vhost: field("vhost")?,
            configure: field("configure")?,
            write: field("write")?,
            read: field("read")?,
        });
    }
    for (i, p) in top.get("topic_permissions").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let what = format!("topic_permissions[{i}]");
        let field = |k: &str| text(p, k, &what).map(String::from);
        out.topic_permissions.push(TopicPermissionConfig {
            user: field("user")?,
            vhost: field("vhost")?,
            exchange: field("exchange")?,
            write: field("write")?,
            read: field("read")?,
        });
    }
    for (section, value) in top {
        if IMPORTED.contains(&section.as_str()) || INFORMATIONAL.contains(&section.as_str()) {
            continue;
        }
        let n = match value {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 1,
        };
        if n > 0 {
            out.not_imported.push((section.clone(), n));
        }
    }
    Ok(out)
}

/// Read a definitions file.
pub fn read(path: &std::path::Path) -> Result<Imported, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("the definitions file {} cannot be used: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rabbitmqctl export_definitions -` of a RabbitMQ 3.10.8 node (users added with
    /// `add_user`; trimmed to one queue).
    const EXPORT: &str = r#"{"bindings":[],"exchanges":[],"global_parameters":[{"name":"internal_cluster_id","value":"rabbitmq-cluster-id-x"}],
      "parameters":[],"permissions":[{"configure":".*","read":".*","user":"guest","vhost":"/","write":".*"}],
      "policies":[],"queues":[{"arguments":{},"auto_delete":false,"durable":true,"name":"q","type":"classic","vhost":"/"}],
      "rabbit_version":"3.10.8","rabbitmq_version":"3.10.8","topic_permissions":[],
      "users":[{"hashing_algorithm":"rabbit_password_hashing_sha256","limits":{},"name":"alice","password_hash":"F0F+DkwlOADPqn8qR8a4yfqSCf0V+zMO74HfwT2nxsb+5lEs","tags":[]},
               {"hashing_algorithm":"rabbit_password_hashing_sha256","limits":{},"name":"guest","password_hash":"i5KII00KzG9U7uwcAZ15Ejdw6Pn1J6mJwbt4t2+HrIQm0BzL","tags":["administrator"]}],
      "vhosts":[{"limits":[],"metadata":{"description":"Default virtual host","tags":[]},"name":"/"},{"name":"tenant-a"}]}"#;

    #[test]
    fn a_rabbitmq_export_gives_users_and_vhosts_and_names_the_rest() {
        let d = parse(EXPORT).unwrap();
        let names: Vec<&str> = d.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "guest"]);
        assert_eq!(d.users[1].tags, ["administrator"]);
        assert_eq!(d.users[0].password_hash.as_deref(), Some("F0F+DkwlOADPqn8qR8a4yfqSCf0V+zMO74HfwT2nxsb+5lEs"));
        assert_eq!(d.vhosts, ["/", "tenant-a"]);
        let mut rest = d.not_imported.clone();
        rest.sort();
        assert_eq!(rest, [("global_parameters".to_string(), 1), ("queues".to_string(), 1)]);
        assert_eq!(d.permissions.len(), 1);
        assert_eq!((d.permissions[0].user.as_str(), d.permissions[0].vhost.as_str()), ("guest", "/"));
    }

    #[test]
    fn older_and_odd_forms() {
        let d = parse(r#"{"users":[{"name":"u","password_hash":"","tags":"administrator, monitoring"}]}"#).unwrap();
        assert_eq!(d.users[0].password_hash, None, "an empty hash: no password");
        assert_eq!(d.users[0].tags, ["administrator", "monitoring"]);
        assert_eq!(d.users[0].hashing_algorithm, "rabbit_password_hashing_sha256");
        for (bad, why) in [
            ("[]", "object"),
            ("{", "JSON"),
            (r#"{"users":[{"password_hash":"x"}]}"#, "\"name\""),
            (r#"{"users":[{"name":"u","tags":[1]}]}"#, "tag"),
            (r#"{"vhosts":[{"nom":"/"}]}"#, "vhosts[0]"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
