//! RabbitMQ's definitions format (what `rabbitmqctl export_definitions` and the management
//! API's export write, and what `load_definitions` reads): users with their password hashes,
//! virtual hosts with their metadata and limits, permissions, topic permissions, policies and
//! operator policies. The broker keeps its users, vhosts, permissions, policies and limits as
//! one [`Definitions`] value, saved in this format under the data directory
//! ([`crate::store::tenancy`]), so the same parser reads an export from RabbitMQ, Warren's own
//! saved state, and what the config file adds.
//!
//! Global parameters (`cluster_name`, ...) are kept with them; queues, exchanges and bindings
//! are read by [`parse_topologies`] and declared in their vhosts. Sections this version does not
//! import (parameters of other components, such as federation's) are counted and reported, never
//! silently dropped.

use serde_json::{Map, Value, json};

use crate::auth::hashing::{HashingAlgorithm, PasswordHash};
use crate::config::{Config, PermissionConfig, TopicPermissionConfig};

/// A user (as a definitions file has it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserDef {
    pub name: String,
    /// RabbitMQ's base64 salted hash; None: no password (certificate logins only).
    pub password_hash: Option<String>,
    pub hashing_algorithm: String,
    pub tags: Vec<String>,
    pub limits: UserLimits,
}

/// `rabbitmqctl set_user_limits`: None = no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserLimits {
    pub max_connections: Option<u64>,
    pub max_channels: Option<u64>,
}

/// A set of named limits (`max-connections`, ...), as RabbitMQ's `set_*_limits` name them.
pub trait Limits {
    /// The limit named `key`, None when there is no such limit.
    fn slot(&mut self, key: &str) -> Option<&mut Option<u64>>;
    /// The limits that are set, by name.
    fn to_map(&self) -> Map<String, Value>;
}

fn limits_map(pairs: &[(&str, Option<u64>)]) -> Map<String, Value> {
    pairs.iter().filter_map(|(k, v)| v.map(|n| ((*k).to_string(), Value::from(n)))).collect()
}

impl Limits for UserLimits {
    fn slot(&mut self, key: &str) -> Option<&mut Option<u64>> {
        match key {
            "max-connections" => Some(&mut self.max_connections),
            "max-channels" => Some(&mut self.max_channels),
            _ => None,
        }
    }

    fn to_map(&self) -> Map<String, Value> {
        limits_map(&[("max-connections", self.max_connections), ("max-channels", self.max_channels)])
    }
}

impl Limits for VHostLimits {
    fn slot(&mut self, key: &str) -> Option<&mut Option<u64>> {
        match key {
            "max-connections" => Some(&mut self.max_connections),
            "max-queues" => Some(&mut self.max_queues),
            _ => None,
        }
    }

    fn to_map(&self) -> Map<String, Value> {
        limits_map(&[("max-connections", self.max_connections), ("max-queues", self.max_queues)])
    }
}

/// A virtual host with its metadata and limits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VHostDef {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// `classic` or `quorum`: the type of queues declared without `x-queue-type`.
    pub default_queue_type: Option<String>,
    pub limits: VHostLimits,
}

/// `rabbitmqctl set_vhost_limits`: None = no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VHostLimits {
    pub max_connections: Option<u64>,
    pub max_queues: Option<u64>,
}

/// A policy or operator policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDef {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    pub apply_to: String,
    pub priority: i64,
    pub definition: Map<String, Value>,
    pub operator: bool,
}

/// Users, vhosts, permissions and policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    pub users: Vec<UserDef>,
    pub vhosts: Vec<VHostDef>,
    pub permissions: Vec<PermissionConfig>,
    pub topic_permissions: Vec<TopicPermissionConfig>,
    pub policies: Vec<PolicyDef>,
    /// Global runtime parameters (`cluster_name`, ...): name and value, in the order set.
    pub global_parameters: Vec<(String, Value)>,
    /// Non-empty sections not imported: (section, entries).
    pub not_imported: Vec<(String, usize)>,
}

/// Sections read here (each a list).
const IMPORTED: &[&str] = &[
    "users",
    "vhosts",
    "permissions",
    "topic_permissions",
    "policies",
    "parameters",
    "global_parameters",
    "queues",
    "exchanges",
    "bindings",
];
/// Sections that describe the file rather than the broker.
const INFORMATIONAL: &[&str] = &["rabbit_version", "rabbitmq_version", "product_name", "product_version"];

fn text<'a>(entry: &'a Value, key: &str, what: &str) -> Result<&'a str, String> {
    entry.get(key).and_then(Value::as_str).ok_or_else(|| format!("{what} has no string \"{key}\""))
}

/// A limit: a non-negative integer; negative (RabbitMQ's -1) or absent = no limit.
fn limit(v: Option<&Value>, what: &str) -> Result<Option<u64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n < 0 => Ok(None),
            Some(n) => Ok(Some(n as u64)),
            None => Err(format!("{what}: {v} is not an integer")),
        },
    }
}

/// Tags: a list since RabbitMQ 3.9; a comma-separated string before.
fn tags(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(String::from).ok_or_else(|| format!("{what}: a tag is not a string")))
            .collect(),
        Some(_) => Err(format!("{what}: \"tags\" is neither a list nor a string")),
    }
}

/// A policy definition: an object, or (RabbitMQ 3.10's export of operator policies) a list
/// of `[key, value]` pairs.
fn definition(v: Option<&Value>, what: &str) -> Result<Map<String, Value>, String> {
    match v {
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([Value::String(k), v]) => Ok((k.clone(), v.clone())),
                _ => Err(format!("{what}: the definition list has an entry that is not a [key, value] pair")),
            })
            .collect(),
        _ => Err(format!("{what}: \"definition\" is not an object")),
    }
}

fn policy(p: &Value, vhost: &str, name: &str, operator: bool, what: &str) -> Result<PolicyDef, String> {
    let priority = match p.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("{what}: priority {v} is not a number"))?,
    };
    Ok(PolicyDef {
        vhost: vhost.to_string(),
        name: name.to_string(),
        pattern: text(p, "pattern", what)?.to_string(),
        apply_to: p.get("apply-to").and_then(Value::as_str).unwrap_or("all").to_string(),
        priority,
        definition: definition(p.get("definition"), what)?,
        operator,
    })
}

impl Definitions {
    /// Parse the text of a definitions file.
    pub fn parse(json: &str) -> Result<Definitions, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON ({e})"))?;
        let top = v.as_object().ok_or("not a JSON object")?;
        // A section that is there must be a list (RabbitMQ 3.10 answers 500 to `"users": "x"`;
        // silently importing nothing would be worse).
        for k in IMPORTED {
            if top.get(*k).is_some_and(|s| !s.is_array() && !s.is_null()) {
                return Err(format!("\"{k}\" is not a list"));
            }
        }
        let list = |k: &str| top.get(k).and_then(Value::as_array).into_iter().flatten().enumerate();
        let mut out = Definitions::default();
        for (i, u) in list("users") {
            let name = text(u, "name", &format!("users[{i}]"))?.to_string();
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
            let l = u.get("limits");
            let limits = UserLimits {
                max_connections: limit(l.and_then(|l| l.get("max-connections")), &what)?,
                max_channels: limit(l.and_then(|l| l.get("max-channels")), &what)?,
            };
            out.users.push(UserDef {
                name,
                password_hash,
                hashing_algorithm,
                tags: tags(u.get("tags"), &what)?,
                limits,
            });
        }
        for (i, h) in list("vhosts") {
            let name = text(h, "name", &format!("vhosts[{i}]"))?.to_string();
            let what = format!("vhost '{name}'");
            // 3.10 exports metadata under "metadata"; 3.11+ also at the top level.
            let meta = h.get("metadata").filter(|m| m.is_object()).unwrap_or(h);
            let field = |k: &str| meta.get(k).or_else(|| h.get(k));
            let dqt = field("default_queue_type").and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
            if let Some(t) = &dqt
                && !["classic", "quorum", "undefined"].contains(&t.as_str())
            {
                return Err(format!("{what}: default_queue_type '{t}' is not supported (classic or quorum)"));
            }
            out.vhosts.push(VHostDef {
                description: field("description").and_then(Value::as_str).unwrap_or_default().to_string(),
                tags: tags(field("tags"), &what)?,
                default_queue_type: dqt.filter(|t| t != "undefined"),
                name,
                limits: VHostLimits::default(),
            });
        }
        for (i, p) in list("permissions") {
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
        for (i, p) in list("topic_permissions") {
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
        for (i, p) in list("policies") {
            let what = format!("policies[{i}]");
            let (vhost, name) = (text(p, "vhost", &what)?, text(p, "name", &what)?);
            out.policies.push(policy(p, vhost, name, false, &format!("policy '{name}' in vhost '{vhost}'"))?);
        }
        let mut skipped_parameters = 0;
        for (i, p) in list("parameters") {
            let what = format!("parameters[{i}]");
            let (component, vhost, name) =
                (text(p, "component", &what)?, text(p, "vhost", &what)?, text(p, "name", &what)?);
            let value = p.get("value").cloned().unwrap_or(Value::Null);
            match component {
                "vhost-limits" => {
                    let what = format!("limits of vhost '{vhost}'");
                    let limits = VHostLimits {
                        max_connections: limit(value.get("max-connections"), &what)?,
                        max_queues: limit(value.get("max-queues"), &what)?,
                    };
                    match out.vhosts.iter_mut().find(|v| v.name == vhost) {
                        Some(v) => v.limits = limits,
                        None => out.vhosts.push(VHostDef { name: vhost.into(), limits, ..Default::default() }),
                    }
                }
                "operator_policy" => out.policies.push(policy(
                    &value,
                    vhost,
                    name,
                    true,
                    &format!("operator policy '{name}' in vhost '{vhost}'"),
                )?),
                _ => skipped_parameters += 1,
            }
        }
        for (i, p) in list("global_parameters") {
            let name = text(p, "name", &format!("global_parameters[{i}]"))?;
            out.put_global_parameter(name, p.get("value").cloned().unwrap_or(Value::Null));
        }
        if skipped_parameters > 0 {
            out.not_imported.push(("parameters (other components)".into(), skipped_parameters));
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

    /// Read a definitions file: its tenancy part and its queues, exchanges and bindings.
    pub fn read(path: &std::path::Path) -> Result<(Definitions, Topologies), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let unusable = |e: String| format!("the definitions file {} cannot be used: {e}", path.display());
        Ok((Self::parse(&text).map_err(unusable)?, parse_topologies(&text).map_err(unusable)?))
    }

    /// Add `other` over these: entries with the same key (a user's name; a vhost's; a
    /// permission's user and vhost; a policy's vhost and name) are replaced.
    pub fn upsert(&mut self, other: Definitions) {
        for u in other.users {
            self.put_user(u);
        }
        for mut v in other.vhosts {
            // An entry without metadata or limits (RabbitMQ 3.10's export lists vhosts by name
            // only) leaves an existing vhost's as they are, as RabbitMQ's import does.
            if let Some(old) = self.vhost(&v.name) {
                if v.description.is_empty() && v.tags.is_empty() && v.default_queue_type.is_none() {
                    v.description = old.description.clone();
                    v.tags = old.tags.clone();
                    v.default_queue_type = old.default_queue_type.clone();
                }
                if v.limits == VHostLimits::default() {
                    v.limits = old.limits;
                }
            }
            self.put_vhost(v);
        }
        for p in other.permissions {
            self.put_permission(p);
        }
        for t in other.topic_permissions {
            self.put_topic_permission(t);
        }
        for p in other.policies {
            self.put_policy(p);
        }
        for (name, value) in other.global_parameters {
            self.put_global_parameter(&name, value);
        }
    }

    /// Set a global parameter (replacing one of the same name).
    pub fn put_global_parameter(&mut self, name: &str, value: Value) {
        match self.global_parameters.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.global_parameters.push((name.to_string(), value)),
        }
    }

    pub fn global_parameter(&self, name: &str) -> Option<&Value> {
        self.global_parameters.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn put_user(&mut self, u: UserDef) {
        match self.users.iter_mut().find(|x| x.name == u.name) {
            Some(x) => *x = u,
            None => self.users.push(u),
        }
    }

    pub fn put_vhost(&mut self, v: VHostDef) {
        match self.vhosts.iter_mut().find(|x| x.name == v.name) {
            Some(x) => *x = v,
            None => self.vhosts.push(v),
        }
    }

    pub fn put_permission(&mut self, p: PermissionConfig) {
        self.permissions.retain(|x| (&x.user, &x.vhost) != (&p.user, &p.vhost));
        self.permissions.push(p);
    }

    /// Add or replace the topic permission of a user on one exchange in one vhost.
    pub fn put_topic_permission(&mut self, t: TopicPermissionConfig) {
        self.topic_permissions.retain(|x| (&x.user, &x.vhost, &x.exchange) != (&t.user, &t.vhost, &t.exchange));
        self.topic_permissions.push(t);
    }

    pub fn put_policy(&mut self, p: PolicyDef) {
        self.policies.retain(|x| (&x.vhost, &x.name, x.operator) != (&p.vhost, &p.name, p.operator));
        self.policies.push(p);
    }

    /// Remove a vhost and everything that names it (permissions, policies).
    pub fn remove_vhost(&mut self, name: &str) -> bool {
        let before = self.vhosts.len();
        self.vhosts.retain(|v| v.name != name);
        self.permissions.retain(|p| p.vhost != name);
        self.topic_permissions.retain(|p| p.vhost != name);
        self.policies.retain(|p| p.vhost != name);
        self.vhosts.len() != before
    }

    /// Remove a user and its permissions.
    pub fn remove_user(&mut self, name: &str) -> bool {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        self.permissions.retain(|p| p.user != name);
        self.topic_permissions.retain(|p| p.user != name);
        self.users.len() != before
    }

    pub fn vhost(&self, name: &str) -> Option<&VHostDef> {
        self.vhosts.iter().find(|v| v.name == name)
    }

    pub fn user(&self, name: &str) -> Option<&UserDef> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The JSON form (RabbitMQ's export layout: vhost limits and operator policies as
    /// `parameters`, user limits on the user).
    pub fn to_json(&self) -> Value {
        let users: Vec<Value> = self
            .users
            .iter()
            .map(|u| {
                json!({
                    "name": u.name,
                    "password_hash": u.password_hash.clone().unwrap_or_default(),
                    "hashing_algorithm": u.hashing_algorithm,
                    "tags": u.tags,
                    "limits": u.limits.to_map(),
                })
            })
            .collect();
        let vhosts: Vec<Value> = self
            .vhosts
            .iter()
            .map(|v| {
                let meta = json!({
                    "description": v.description,
                    "tags": v.tags,
                    "default_queue_type": v.default_queue_type.clone().unwrap_or_else(|| "classic".into()),
                });
                json!({
                    "name": v.name,
                    "description": v.description,
                    "tags": v.tags,
                    "default_queue_type": meta["default_queue_type"],
                    "metadata": meta,
                    "limits": [],
                })
            })
            .collect();
        let mut parameters: Vec<Value> = self
            .vhosts
            .iter()
            .filter(|v| v.limits != VHostLimits::default())
            .map(
                |v| json!({"vhost": v.name, "component": "vhost-limits", "name": "limits", "value": v.limits.to_map()}),
            )
            .collect();
        let policy = |p: &PolicyDef| {
            json!({
                "vhost": p.vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
                "definition": p.definition, "priority": p.priority,
            })
        };
        // An operator policy's value has no vhost or name (RabbitMQ refuses them there).
        parameters.extend(self.policies.iter().filter(|p| p.operator).map(|p| {
            let value = json!({
                "pattern": p.pattern, "apply-to": p.apply_to, "definition": p.definition, "priority": p.priority,
            });
            json!({"vhost": p.vhost, "component": "operator_policy", "name": p.name, "value": value})
        }));
        json!({
            "product_name": "Warren",
            "product_version": env!("CARGO_PKG_VERSION"),
            "rabbit_version": "3.13.7",
            "rabbitmq_version": "3.13.7",
            "users": users,
            "vhosts": vhosts,
            "permissions": self.permissions.iter().map(|p| json!({
                "user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read,
            })).collect::<Vec<_>>(),
            "topic_permissions": self.topic_permissions.iter().map(|p| json!({
                "user": p.user, "vhost": p.vhost, "exchange": p.exchange, "write": p.write, "read": p.read,
            })).collect::<Vec<_>>(),
            "policies": self.policies.iter().filter(|p| !p.operator).map(policy).collect::<Vec<_>>(),
            "parameters": parameters,
            "global_parameters": self.global_parameters.iter().map(|(name, value)| json!({
                "name": name, "value": value,
            })).collect::<Vec<_>>(),
            "queues": [],
            "exchanges": [],
            "bindings": [],
        })
    }
}

/// The definitions a broker starts with: those it saved (None at its first start, which
/// creates the default user), then the import file's, then the config file's, each replacing
/// entries of the same key. The default user may do anything in the vhosts the config creates
/// (unless the import file brought its own user of that name, with its own permissions).
pub fn at_start(
    config: &Config,
    saved: Option<Definitions>,
    import: Option<Definitions>,
) -> Result<Definitions, String> {
    let auth = &config.auth;
    let first = saved.is_none();
    let mut d = saved.unwrap_or_default();
    d.not_imported.clear();
    if first {
        d.put_user(UserDef {
            name: auth.default_user.clone(),
            password_hash: Some(PasswordHash::generate(HashingAlgorithm::Sha256, &auth.default_pass).encode()),
            hashing_algorithm: HashingAlgorithm::Sha256.name().into(),
            tags: vec!["administrator".into()],
            limits: UserLimits::default(),
        });
    }
    let import_has_default = import.as_ref().is_some_and(|i| i.user(&auth.default_user).is_some());
    if let Some(i) = import {
        d.not_imported = i.not_imported.clone();
        d.upsert(i);
    }
    let mut created = Vec::new();
    for name in &auth.vhosts {
        if d.vhost(name).is_none() {
            d.put_vhost(VHostDef { name: name.clone(), ..Default::default() });
            created.push(name.clone());
        }
    }
    for v in &config.vhosts {
        if v.name.is_empty() {
            return Err("a [[vhosts]] entry has an empty name".into());
        }
        if d.vhost(&v.name).is_none() {
            created.push(v.name.clone());
        }
        d.put_vhost(VHostDef {
            name: v.name.clone(),
            description: v.description.clone(),
            tags: v.tags.clone(),
            default_queue_type: v.default_queue_type.clone(),
            limits: VHostLimits { max_connections: v.max_connections, max_queues: v.max_queues },
        });
    }
    if !import_has_default && d.user(&auth.default_user).is_some() {
        for v in created {
            if !d.permissions.iter().any(|p| p.user == auth.default_user && p.vhost == v) {
                d.put_permission(PermissionConfig {
                    user: auth.default_user.clone(),
                    vhost: v,
                    configure: ".*".into(),
                    write: ".*".into(),
                    read: ".*".into(),
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for u in &auth.users {
        let what = format!("auth.users entry '{}'", u.name);
        if u.name.is_empty() {
            return Err("an auth.users entry has an empty name".into());
        }
        if u.name == auth.default_user || !seen.insert(u.name.clone()) {
            return Err(format!("{what}: the user is defined twice (or is the default user)"));
        }
        let algorithm = HashingAlgorithm::parse(&u.hashing_algorithm).ok_or_else(|| {
            format!(
                "{what}: unknown hashing_algorithm '{}' (use rabbit_password_hashing_sha256, _sha512 or _md5)",
                u.hashing_algorithm
            )
        })?;
        let password_hash = match (&u.password_hash, &u.password) {
            (Some(_), Some(_)) => return Err(format!("{what}: give password_hash or password, not both")),
            (Some(h), None) => Some(h.clone()),
            (None, Some(p)) => Some(PasswordHash::generate(algorithm, p).encode()),
            (None, None) => None,
        };
        let limits = d.user(&u.name).map(|x| x.limits).unwrap_or_default();
        d.put_user(UserDef {
            name: u.name.clone(),
            password_hash,
            hashing_algorithm: u.hashing_algorithm.clone(),
            tags: u.tags.clone(),
            limits,
        });
    }
    for p in &auth.permissions {
        d.put_permission(p.clone());
    }
    for t in &auth.topic_permissions {
        d.put_topic_permission(t.clone());
    }
    for (list, operator) in [(&config.policies, false), (&config.operator_policies, true)] {
        for p in list {
            let definition = match serde_json::to_value(&p.definition) {
                Ok(Value::Object(m)) => m,
                _ => return Err(format!("policy '{}': the definition is not a table", p.name)),
            };
            d.put_policy(PolicyDef {
                vhost: p.vhost.clone(),
                name: p.name.clone(),
                pattern: p.pattern.clone(),
                apply_to: p.apply_to.clone(),
                priority: p.priority,
                definition,
                operator,
            });
        }
    }
    for l in &config.user_limits {
        let Some(u) = d.users.iter_mut().find(|u| u.name == l.user) else {
            return Err(format!("user_limits for user '{}': no such user", l.user));
        };
        u.limits = UserLimits { max_connections: l.max_connections, max_channels: l.max_channels };
    }
    Ok(d)
}

// ---- queues, exchanges and bindings -------------------------------------------------------

/// The durable queues, exchanges and bindings of a definitions file, per vhost (they are
/// declared in the vhosts, not kept in the tenancy value).
pub type Topologies = Vec<(String, crate::store::definitions::Definitions)>;

fn topology_of<'a>(t: &'a mut Topologies, vhost: &str) -> &'a mut crate::store::definitions::Definitions {
    if let Some(i) = t.iter().position(|(v, _)| v == vhost) {
        return &mut t[i].1;
    }
    t.push((vhost.to_string(), Default::default()));
    &mut t.last_mut().expect("just pushed").1
}

/// A JSON value as an AMQP field value (RabbitMQ's conversion of definitions arguments:
/// integers as signed 64-bit, other numbers as doubles).
pub fn json_to_field(v: &Value) -> amq_protocol::types::AMQPValue {
    use amq_protocol::types::{AMQPValue, FieldArray};
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(a.iter().map(json_to_field).collect::<Vec<_>>())),
        Value::Object(m) => AMQPValue::FieldTable(json_to_table(m)),
    }
}

pub fn json_to_table(m: &Map<String, Value>) -> amq_protocol::types::FieldTable {
    let mut t = amq_protocol::types::FieldTable::default();
    for (k, v) in m {
        t.insert(k.as_str().into(), json_to_field(v));
    }
    t
}

/// An AMQP field value as JSON (for exports).
pub fn field_to_json(v: &amq_protocol::types::AMQPValue) -> Value {
    use amq_protocol::types::AMQPValue as A;
    match v {
        A::Boolean(b) => Value::Bool(*b),
        A::ShortShortInt(n) => (*n).into(),
        A::ShortShortUInt(n) => (*n).into(),
        A::ShortInt(n) => (*n).into(),
        A::ShortUInt(n) => (*n).into(),
        A::LongInt(n) => (*n).into(),
        A::LongUInt(n) => (*n).into(),
        A::LongLongInt(n) => (*n).into(),
        A::Float(f) => (*f as f64).into(),
        A::Double(f) => (*f).into(),
        A::Timestamp(t) => (*t).into(),
        A::ShortString(s) => s.as_str().into(),
        A::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
        A::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into(),
        A::FieldArray(a) => Value::Array(a.as_slice().iter().map(field_to_json).collect()),
        A::FieldTable(t) => table_to_json(t),
        A::DecimalValue(d) => (d.value as f64 / 10f64.powi(d.scale as i32)).into(),
        A::Void => Value::Null,
    }
}

pub fn table_to_json(t: &amq_protocol::types::FieldTable) -> Value {
    Value::Object(t.inner().iter().map(|(k, v)| (k.as_str().to_string(), field_to_json(v))).collect())
}

/// The queues, exchanges and bindings of a definitions file's text (only durable ones: a
/// definitions file describes what survives a restart).
pub fn parse_topologies(json: &str) -> Result<Topologies, String> {
    use crate::store::definitions::{BindingDef, ExchangeDef, QueueDef};
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON ({e})"))?;
    let list = |k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let args = |e: &Value, what: &str| match e.get("arguments") {
        None | Some(Value::Null) => Ok(amq_protocol::types::FieldTable::default()),
        Some(Value::Object(m)) => Ok(json_to_table(m)),
        Some(_) => Err(format!("{what}: \"arguments\" is not an object")),
    };
    let flag = |e: &Value, k: &str| e.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut out = Topologies::new();
    for (i, x) in list("exchanges").iter().enumerate() {
        let what = format!("exchanges[{i}]");
        if x.get("durable").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let def = ExchangeDef {
            name: text(x, "name", &what)?.into(),
            kind: text(x, "type", &what)?.into(),
            auto_delete: flag(x, "auto_delete"),
            internal: flag(x, "internal"),
            arguments: args(x, &what)?,
        };
        topology_of(&mut out, text(x, "vhost", &what)?).exchanges.push(def);
    }
    for (i, q) in list("queues").iter().enumerate() {
        let what = format!("queues[{i}]");
        if q.get("durable").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let mut arguments = args(q, &what)?;
        // 3.9+ exports the queue type beside the arguments.
        if let Some(t) = q.get("type").and_then(Value::as_str)
            && t != "classic"
            && !arguments.inner().contains_key("x-queue-type")
        {
            arguments.insert("x-queue-type".into(), amq_protocol::types::AMQPValue::LongString(t.into()));
        }
        let def = QueueDef { name: text(q, "name", &what)?.into(), auto_delete: flag(q, "auto_delete"), arguments };
        topology_of(&mut out, text(q, "vhost", &what)?).queues.push(def);
    }
    for (i, b) in list("bindings").iter().enumerate() {
        let what = format!("bindings[{i}]");
        let def = BindingDef {
            source: text(b, "source", &what)?.into(),
            destination: text(b, "destination", &what)?.into(),
            destination_type: text(b, "destination_type", &what)?.into(),
            routing_key: b.get("routing_key").and_then(Value::as_str).unwrap_or_default().into(),
            arguments: args(b, &what)?,
        };
        topology_of(&mut out, text(b, "vhost", &what)?).bindings.push(def);
    }
    Ok(out)
}

/// Add the durable queues, exchanges and bindings of each vhost to an export (RabbitMQ's
/// layout).
pub fn add_topologies(export: &mut Value, t: &Topologies) {
    let (mut xs, mut qs, mut bs) = (Vec::new(), Vec::new(), Vec::new());
    for (vhost, d) in t {
        xs.extend(d.exchanges.iter().map(|x| {
            json!({"name": x.name, "vhost": vhost, "type": x.kind, "durable": true, "auto_delete": x.auto_delete,
                   "internal": x.internal, "arguments": table_to_json(&x.arguments)})
        }));
        qs.extend(d.queues.iter().map(|q| {
            let t = q.arguments.inner().get("x-queue-type").and_then(crate::protocol::methods::value_str);
            json!({"name": q.name, "vhost": vhost, "durable": true, "auto_delete": q.auto_delete,
                   "arguments": table_to_json(&q.arguments), "type": t.unwrap_or_else(|| "classic".into())})
        }));
        bs.extend(d.bindings.iter().map(|b| {
            json!({"source": b.source, "vhost": vhost, "destination": b.destination, "destination_type": b.destination_type,
                   "routing_key": b.routing_key, "arguments": table_to_json(&b.arguments)})
        }));
    }
    export["exchanges"] = Value::Array(xs);
    export["queues"] = Value::Array(qs);
    export["bindings"] = Value::Array(bs);
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
    fn importing_a_bare_vhost_entry_keeps_what_the_vhost_has() {
        let mut d = Definitions::parse(
            r#"{"vhosts": [{"name": "a", "description": "team A", "tags": ["eu"], "default_queue_type": "quorum"}],
                "parameters": [{"vhost": "a", "component": "vhost-limits", "name": "limits", "value": {"max-queues": 5}}]}"#,
        )
        .unwrap();
        d.upsert(Definitions::parse(r#"{"vhosts": [{"name": "a"}]}"#).unwrap());
        let a = d.vhost("a").unwrap();
        assert_eq!((a.description.as_str(), a.default_queue_type.as_deref()), ("team A", Some("quorum")));
        assert_eq!((a.tags.clone(), a.limits.max_queues), (vec!["eu".to_string()], Some(5)));
        d.upsert(Definitions::parse(r#"{"vhosts": [{"name": "a", "description": "team B"}]}"#).unwrap());
        assert_eq!(d.vhost("a").unwrap().description, "team B", "given metadata replaces");
    }

    #[test]
    fn a_section_that_is_not_a_list_is_refused() {
        for k in IMPORTED {
            let e = Definitions::parse(&format!("{{\"{k}\": \"nope\"}}")).unwrap_err();
            assert_eq!(e, format!("\"{k}\" is not a list"));
        }
        assert!(Definitions::parse(r#"{"users": null, "queues": []}"#).is_ok());
    }

    #[test]
    fn a_rabbitmq_export_gives_users_and_vhosts_and_names_the_rest() {
        let d = Definitions::parse(EXPORT).unwrap();
        let names: Vec<&str> = d.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "guest"]);
        assert_eq!(d.users[1].tags, ["administrator"]);
        assert_eq!(d.users[0].password_hash.as_deref(), Some("F0F+DkwlOADPqn8qR8a4yfqSCf0V+zMO74HfwT2nxsb+5lEs"));
        let vhosts: Vec<&str> = d.vhosts.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(vhosts, ["/", "tenant-a"]);
        assert_eq!(d.vhosts[0].description, "Default virtual host");
        assert_eq!(d.not_imported, []);
        assert_eq!(d.global_parameter("internal_cluster_id"), Some(&json!("rabbitmq-cluster-id-x")));
        assert_eq!(d.permissions.len(), 1);
        assert_eq!((d.permissions[0].user.as_str(), d.permissions[0].vhost.as_str()), ("guest", "/"));
    }

    #[test]
    fn older_and_odd_forms() {
        let d = Definitions::parse(r#"{"users":[{"name":"u","password_hash":"","tags":"administrator, monitoring"}]}"#)
            .unwrap();
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
            let e = Definitions::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn policies_limits_and_topology_in_both_of_rabbitmqs_forms() {
        let text = r#"{
          "users":[{"name":"bob","password_hash":"","limits":{"max-connections":3,"max-channels":-1}}],
          "vhosts":[{"name":"t1","metadata":{"description":"d","tags":["a"],"default_queue_type":"quorum"}}],
          "policies":[{"vhost":"t1","name":"p","pattern":"^q","apply-to":"queues","definition":{"max-length":1},"priority":2}],
          "parameters":[
            {"component":"operator_policy","name":"op","vhost":"t1","value":{"apply-to":"queues","definition":[["max-length",5]],"pattern":".*","priority":0}},
            {"component":"vhost-limits","name":"limits","vhost":"t1","value":{"max-connections":1}},
            {"component":"federation-upstream","name":"u","vhost":"t1","value":{}}],
          "queues":[{"name":"q","vhost":"t1","durable":true,"auto_delete":false,"type":"quorum","arguments":{"x-max-length":7}},
                    {"name":"gone","vhost":"t1","durable":false,"auto_delete":false,"arguments":{}}],
          "exchanges":[{"name":"x","vhost":"t1","type":"topic","durable":true,"auto_delete":false,"internal":false,"arguments":{"alternate-exchange":"ae"}}],
          "bindings":[{"source":"x","vhost":"t1","destination":"q","destination_type":"queue","routing_key":"k","arguments":{}}]}"#;
        let d = Definitions::parse(text).unwrap();
        assert_eq!(d.users[0].limits, UserLimits { max_connections: Some(3), max_channels: None });
        let v = d.vhost("t1").unwrap();
        assert_eq!((v.description.as_str(), v.default_queue_type.as_deref()), ("d", Some("quorum")));
        assert_eq!(v.limits.max_connections, Some(1));
        let op = d.policies.iter().find(|p| p.operator).unwrap();
        assert_eq!(op.definition["max-length"], 5, "the list-of-pairs form");
        assert_eq!(d.policies.iter().find(|p| !p.operator).unwrap().priority, 2);
        assert_eq!(d.not_imported, [("parameters (other components)".to_string(), 1)]);
        // Round trip through the export form.
        let again = Definitions::parse(&d.to_json().to_string()).unwrap();
        assert_eq!(
            (again.users, again.vhosts, again.policies),
            (d.users.clone(), d.vhosts.clone(), d.policies.clone())
        );
        let t = parse_topologies(text).unwrap();
        assert_eq!(t.len(), 1);
        let (vhost, topo) = &t[0];
        assert_eq!((vhost.as_str(), topo.queues.len(), topo.exchanges.len(), topo.bindings.len()), ("t1", 1, 1, 1));
        let args = table_to_json(&topo.queues[0].arguments);
        assert_eq!(args, json!({"x-max-length": 7, "x-queue-type": "quorum"}));
        let mut out = json!({});
        add_topologies(&mut out, &t);
        assert_eq!(parse_topologies(&out.to_string()).unwrap(), t, "export and import agree");
    }
}
