//! What each command asks of the management API, and what it prints.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::api::{Api, Failure, Result, exit, path};
use crate::cli::*;
use crate::output;

/// A command's surroundings: the API, the vhost (-p) and how to print.
pub struct Ctl {
    pub api: Api,
    pub vhost: String,
    pub format: Format,
    pub quiet: bool,
}

impl Ctl {
    /// An informational line (standard error, so standard output carries only data).
    fn info(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }

    fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// `what` in the vhost, for messages.
    fn in_vhost(&self, what: &str, name: &str) -> String {
        format!("{what} '{name}' in vhost '{}'", self.vhost)
    }
}

/// Write to standard output; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(exit::CANT_CREATE, format!("cannot write the output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Prefix the message of a failure that is about the object (400, 404) with its name.
fn about<T>(what: String) -> impl FnOnce(Failure) -> Result<T> {
    move |f| match f.status {
        400 | 404 => Err(Failure { message: format!("{what}: {}", f.message), ..f }),
        _ => Err(f),
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Failure::data(format!("{what} is not valid JSON: {e}")))
}

fn parse_object(what: &str, text: &str) -> Result<Map<String, Value>> {
    match parse_json(what, text)? {
        Value::Object(m) => Ok(m),
        _ => Err(Failure::data(format!("{what} must be a JSON object"))),
    }
}

/// `key=value`, the value as JSON when it parses as such (`10`, `true`, `{"a":1}`), else as a
/// string.
fn key_value(pair: &str) -> Result<(String, Value)> {
    let (k, v) = pair.split_once('=').ok_or_else(|| Failure::data(format!("'{pair}' is not KEY=VALUE")))?;
    if k.is_empty() {
        return Err(Failure::data(format!("'{pair}' has an empty key")));
    }
    Ok((k.to_string(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()))))
}

/// A JSON object (`json`, when given) with `key=value` pairs laid over it.
fn object_with(what: &str, json: Option<&String>, pairs: &[String]) -> Result<Map<String, Value>> {
    let mut m = match json {
        Some(text) => parse_object(what, text)?,
        None => Map::new(),
    };
    for pair in pairs {
        let (k, v) = key_value(pair)?;
        m.insert(k, v);
    }
    Ok(m)
}

fn arguments(a: &Arguments) -> Result<Map<String, Value>> {
    object_with("--arguments", a.arguments.as_ref(), &a.arg)
}

/// All of standard input (for payloads, passwords and `import -`).
fn read_stdin() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).map_err(|e| Failure::data(format!("cannot read standard input: {e}")))?;
    Ok(buf)
}

/// A password from the argument, or the first line of standard input (as rabbitmqctl).
fn password(given: Option<String>) -> Result<String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let input = String::from_utf8(read_stdin()?).map_err(|_| Failure::data("the password is not UTF-8"))?;
    match input.lines().next() {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err(Failure::new(exit::USAGE, "no password given (as an argument or on standard input)")),
    }
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()
}

pub fn run(ctl: &Ctl, command: Command) -> Result<()> {
    let api = &ctl.api;
    let vhost = ctl.vhost.as_str();
    match command {
        Command::List(args) => list(ctl, args),
        Command::Declare(d) => declare(ctl, d),
        Command::Delete(d) => delete(ctl, d),
        Command::Purge { queue } => {
            ctl.info(format!("Purging {}", ctl.in_vhost("queue", &queue)));
            api.delete(&path("/api/queues/{}/{}/contents", &[vhost, &queue])?)
                .or_else(about(ctl.in_vhost("queue", &queue)))?;
            Ok(())
        }
        Command::Publish(args) => publish(ctl, args),
        Command::Get(args) => get(ctl, args),
        Command::AddUser { name, new_password, tags } => {
            let user_path = path("/api/users/{}", &[&name])?;
            match api.get(&user_path) {
                Ok(_) => return Err(Failure::data(format!("user '{name}' already exists"))),
                Err(f) if f.status == 404 => {}
                Err(f) => return Err(f),
            }
            let password = password(new_password)?;
            ctl.info(format!("Adding user '{name}'"));
            api.put(&user_path, &json!({"password": password, "tags": comma_list(&tags).join(",")}))?;
            Ok(())
        }
        Command::DeleteUser { name } => {
            ctl.info(format!("Deleting user '{name}'"));
            api.delete(&path("/api/users/{}", &[&name])?).or_else(about(format!("user '{name}'")))?;
            Ok(())
        }
        Command::ChangePassword { name, new_password } => {
            let user_path = path("/api/users/{}", &[&name])?;
            let user = api.get(&user_path).or_else(about(format!("user '{name}'")))?;
            let password = password(new_password)?;
            ctl.info(format!("Changing password for user '{name}'"));
            // Hashed with the broker's default algorithm, whatever the old hash used.
            api.put(&user_path, &json!({"password": password, "tags": user["tags"]}))?;
            Ok(())
        }
        Command::SetUserTags { name, tags } => {
            let user_path = path("/api/users/{}", &[&name])?;
            let user = api.get(&user_path).or_else(about(format!("user '{name}'")))?;
            let tags: Vec<String> = tags.iter().flat_map(|t| comma_list(t)).collect();
            ctl.info(format!("Setting tags for user '{name}' to [{}]", tags.join(", ")));
            let body = json!({"password_hash": user["password_hash"], "hashing_algorithm": user["hashing_algorithm"],
                "tags": tags.join(",")});
            api.put(&user_path, &body)?;
            Ok(())
        }
        Command::AddVhost { name, description, tags, default_queue_type } => {
            ctl.info(format!("Adding vhost '{name}'"));
            let mut body = json!({"description": description, "tags": comma_list(&tags).join(",")});
            if let Some(t) = default_queue_type {
                body["default_queue_type"] = Value::String(t);
            }
            api.put(&path("/api/vhosts/{}", &[&name])?, &body)?;
            Ok(())
        }
        Command::DeleteVhost { name } => {
            ctl.info(format!("Deleting vhost '{name}'"));
            api.delete(&path("/api/vhosts/{}", &[&name])?).or_else(about(format!("vhost '{name}'")))?;
            Ok(())
        }
        Command::SetPermissions { username: user, configure, write, read } => {
            ctl.info(format!("Setting permissions for user '{user}' in vhost '{vhost}'"));
            let body = json!({"configure": configure, "write": write, "read": read});
            api.put(&path("/api/permissions/{}/{}", &[vhost, &user])?, &body)
                .or_else(about(format!("user '{user}' in vhost '{vhost}'")))?;
            Ok(())
        }
        Command::ClearPermissions { username: user } => {
            ctl.info(format!("Clearing permissions for user '{user}' in vhost '{vhost}'"));
            api.delete(&path("/api/permissions/{}/{}", &[vhost, &user])?)
                .or_else(about(format!("permissions of user '{user}' in vhost '{vhost}'")))?;
            Ok(())
        }
        Command::SetPolicy { name, pattern, definition, priority, apply_to } => {
            let definition = parse_object("the policy definition", &definition)?;
            let apply_to = match apply_to {
                ApplyTo::All => "all",
                ApplyTo::Queues => "queues",
                ApplyTo::Exchanges => "exchanges",
            };
            ctl.info(format!("Setting policy '{name}' for pattern '{pattern}' in vhost '{vhost}'"));
            let body =
                json!({"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to});
            api.put(&path("/api/policies/{}/{}", &[vhost, &name])?, &body)
                .or_else(about(ctl.in_vhost("policy", &name)))?;
            Ok(())
        }
        Command::ClearPolicy { name } => {
            ctl.info(format!("Clearing policy '{name}' in vhost '{vhost}'"));
            api.delete(&path("/api/policies/{}/{}", &[vhost, &name])?).or_else(about(ctl.in_vhost("policy", &name)))?;
            Ok(())
        }
        Command::SetVhostLimits { definition } => {
            ctl.info(format!("Setting limits of vhost '{vhost}'"));
            set_limits(api, "vhost-limits", vhost, &definition).or_else(about(format!("vhost '{vhost}'")))
        }
        Command::SetUserLimits { username: user, definition } => {
            ctl.info(format!("Setting limits of user '{user}'"));
            set_limits(api, "user-limits", &user, &definition).or_else(about(format!("user '{user}'")))
        }
        Command::Export { file } => {
            let defs = api.get("/api/definitions")?;
            let text = output::json(&defs);
            if file == "-" {
                return emit(&text);
            }
            std::fs::write(&file, text)
                .map_err(|e| Failure::new(exit::CANT_CREATE, format!("cannot write '{file}': {e}")))?;
            ctl.info(format!("Exported definitions to '{file}'"));
            Ok(())
        }
        Command::Import { file } => {
            let bytes = if file == "-" {
                read_stdin()?
            } else {
                std::fs::read(&file).map_err(|e| Failure::data(format!("cannot read '{file}': {e}")))?
            };
            let text = String::from_utf8(bytes).map_err(|_| Failure::data(format!("'{file}' is not UTF-8")))?;
            let defs = parse_json(&format!("'{file}'"), &text)?;
            if !defs.is_object() {
                return Err(Failure::data(format!("'{file}' is not a definitions object")));
            }
            ctl.info(format!("Importing definitions from '{file}'"));
            api.post("/api/definitions", &defs)?;
            Ok(())
        }
        Command::CloseConnection { name, reason } => {
            ctl.info(format!("Closing connection '{name}', reason: {reason}"));
            api.request("DELETE", &path("/api/connections/{}", &[&name])?, None, &[("x-reason", &reason)])
                .or_else(about(format!("connection '{name}'")))?;
            Ok(())
        }
        Command::Status => status(ctl),
        Command::AwaitStartup { timeout } => await_startup(ctl, Duration::from_secs(timeout)),
    }
}

/// One kind of `list`: its paths (one vhost / all) and rabbitmqctl's default columns.
fn listing(kind: ListKind) -> (&'static str, Option<&'static str>, &'static [&'static str]) {
    match kind {
        ListKind::Queues => ("/api/queues", Some("/api/queues/{}"), &["name", "messages"]),
        ListKind::Exchanges => ("/api/exchanges", Some("/api/exchanges/{}"), &["name", "type"]),
        ListKind::Bindings => (
            "/api/bindings",
            Some("/api/bindings/{}"),
            &["source", "destination", "destination_type", "routing_key", "arguments"],
        ),
        ListKind::Consumers => (
            "/api/consumers",
            Some("/api/consumers/{}"),
            &[
                "queue.name",
                "channel_details.connection_name",
                "channel_details.number",
                "consumer_tag",
                "ack_required",
                "prefetch_count",
                "active",
                "arguments",
            ],
        ),
        ListKind::Permissions => {
            ("/api/permissions", Some("/api/vhosts/{}/permissions"), &["user", "configure", "write", "read"])
        }
        ListKind::Policies => {
            ("/api/policies", Some("/api/policies/{}"), &["name", "pattern", "apply-to", "definition", "priority"])
        }
        ListKind::Connections => {
            ("/api/connections", None, &["name", "user", "vhost", "peer_host", "peer_port", "state"])
        }
        ListKind::Channels => ("/api/channels", None, &["name", "user", "consumer_count", "messages_unacknowledged"]),
        ListKind::Users => ("/api/users", None, &["name", "tags"]),
        ListKind::Vhosts => ("/api/vhosts", None, &["name"]),
    }
}

fn list(ctl: &Ctl, args: ListArgs) -> Result<()> {
    let (all_path, vhost_path, defaults) = listing(args.kind);
    let name = format!("{:?}", args.kind).to_lowercase();
    let (url, scoped) = match vhost_path {
        Some(p) if !args.all_vhosts => {
            ctl.info(format!("Listing {name} for vhost '{}' ...", ctl.vhost));
            (path(p, &[&ctl.vhost])?, true)
        }
        _ => {
            ctl.info(format!("Listing {name} ..."));
            (all_path.to_string(), false)
        }
    };
    let answer = ctl.api.get(&url).or_else(about(format!("vhost '{}'", ctl.vhost)))?;
    let items = answer.as_array().cloned().unwrap_or_default();
    let explicit = !args.columns.is_empty();
    let columns: Vec<String> = if explicit {
        args.columns
    } else {
        let vhost = (!scoped && vhost_path.is_some()).then_some("vhost");
        vhost.into_iter().chain(defaults.iter().copied()).map(String::from).collect()
    };
    if ctl.json() {
        let shown: Vec<Value> =
            if explicit { items.iter().map(|i| output::narrow(i, &columns)).collect() } else { items };
        return emit(&output::json(&Value::Array(shown)));
    }
    emit(&output::items_table(&items, &columns, !args.no_table_headers))
}

fn declare(ctl: &Ctl, d: Declare) -> Result<()> {
    let (api, vhost) = (&ctl.api, ctl.vhost.as_str());
    match d {
        Declare::Queue { name, durable, auto_delete, queue_type, arguments: a } => {
            let mut args = arguments(&a)?;
            if let Some(t) = queue_type {
                args.insert("x-queue-type".into(), Value::String(t));
            }
            ctl.info(format!("Declaring {}", ctl.in_vhost("queue", &name)));
            let body = json!({"durable": durable, "auto_delete": auto_delete, "arguments": args});
            api.put(&path("/api/queues/{}/{}", &[vhost, &name])?, &body)
                .or_else(about(ctl.in_vhost("queue", &name)))?;
        }
        Declare::Exchange { name, kind, durable, auto_delete, internal, arguments: a } => {
            let body = json!({"type": kind, "durable": durable, "auto_delete": auto_delete, "internal": internal,
                "arguments": arguments(&a)?});
            ctl.info(format!("Declaring {}", ctl.in_vhost("exchange", &name)));
            api.put(&path("/api/exchanges/{}/{}", &[vhost, &name])?, &body)
                .or_else(about(ctl.in_vhost("exchange", &name)))?;
        }
        Declare::Binding(b) => {
            let body = json!({"routing_key": b.routing_key, "arguments": arguments(&b.arguments)?});
            ctl.info(format!("Binding {}", describe(ctl, &b)));
            api.post(&binding_path(vhost, &b)?, &body).or_else(about(describe(ctl, &b)))?;
        }
    }
    Ok(())
}

fn binding_path(vhost: &str, b: &BindingArgs) -> Result<String> {
    let template = match b.destination_type {
        DestinationType::Queue => "/api/bindings/{}/e/{}/q/{}",
        DestinationType::Exchange => "/api/bindings/{}/e/{}/e/{}",
    };
    path(template, &[vhost, &b.source, &b.destination])
}

fn describe(ctl: &Ctl, b: &BindingArgs) -> String {
    let kind = match b.destination_type {
        DestinationType::Queue => "queue",
        DestinationType::Exchange => "exchange",
    };
    format!(
        "exchange '{}' to {kind} '{}' with routing key '{}' in vhost '{}'",
        b.source, b.destination, b.routing_key, ctl.vhost
    )
}

fn delete(ctl: &Ctl, d: Delete) -> Result<()> {
    let (api, vhost) = (&ctl.api, ctl.vhost.as_str());
    match d {
        Delete::Queue { name, if_unused, if_empty } => {
            let mut p = path("/api/queues/{}/{}", &[vhost, &name])?;
            let flags: Vec<&str> = [(if_unused, "if-unused=true"), (if_empty, "if-empty=true")]
                .iter()
                .filter(|f| f.0)
                .map(|f| f.1)
                .collect();
            if !flags.is_empty() {
                p = format!("{p}?{}", flags.join("&"));
            }
            ctl.info(format!("Deleting {}", ctl.in_vhost("queue", &name)));
            api.delete(&p).or_else(about(ctl.in_vhost("queue", &name)))?;
        }
        Delete::Exchange { name, if_unused } => {
            let mut p = path("/api/exchanges/{}/{}", &[vhost, &name])?;
            if if_unused {
                p.push_str("?if-unused=true");
            }
            ctl.info(format!("Deleting {}", ctl.in_vhost("exchange", &name)));
            api.delete(&p).or_else(about(ctl.in_vhost("exchange", &name)))?;
        }
        Delete::Binding(b) => {
            // A binding is addressed by its properties key: find it among those between the two.
            let args = Value::Object(arguments(&b.arguments)?);
            let list_path = binding_path(vhost, &b)?;
            let existing = api.get(&list_path).or_else(about(describe(ctl, &b)))?;
            let found = existing.as_array().into_iter().flatten().find(|x| {
                x["routing_key"] == b.routing_key.as_str() && x.get("arguments").unwrap_or(&Value::Null) == &args
            });
            let props = found
                .and_then(|x| x["properties_key"].as_str())
                .ok_or_else(|| Failure::data(format!("no binding from {} and these arguments", describe(ctl, &b))))?;
            ctl.info(format!("Unbinding {}", describe(ctl, &b)));
            api.delete(&format!("{list_path}/{}", crate::api::segment(props)?)).or_else(about(describe(ctl, &b)))?;
        }
    }
    Ok(())
}

/// Message properties from `--properties` and `--property k=v` (delivery_mode, priority and
/// timestamp are numbers, the others strings), headers from `--header k=v`.
fn properties(args: &PublishArgs) -> Result<Map<String, Value>> {
    let mut props = object_with("--properties", args.properties.as_ref(), &args.property)?;
    for (k, v) in props.iter_mut() {
        match (k.as_str(), &*v) {
            ("delivery_mode" | "priority" | "timestamp", Value::Number(_)) | ("headers", Value::Object(_)) => {}
            ("delivery_mode" | "priority" | "timestamp", _) => {
                return Err(Failure::data(format!("the property {k} must be a number")));
            }
            ("headers", _) => return Err(Failure::data("the headers property must be an object")),
            (_, Value::String(_)) => {}
            (_, other) => *v = Value::String(other.to_string()),
        }
    }
    if !args.header.is_empty() {
        let extra = object_with("--header", None, &args.header)?;
        if let Value::Object(h) = props.entry("headers").or_insert_with(|| json!({})) {
            h.extend(extra);
        }
    }
    Ok(props)
}

fn publish(ctl: &Ctl, args: PublishArgs) -> Result<()> {
    let props = properties(&args)?;
    let payload = match args.payload.as_deref() {
        None | Some("-") => read_stdin()?,
        Some(p) => p.as_bytes().to_vec(),
    };
    let (payload, encoding) = match String::from_utf8(payload) {
        Ok(s) => (s, "string"),
        Err(e) => (base64::engine::general_purpose::STANDARD.encode(e.into_bytes()), "base64"),
    };
    // The API names the default exchange amq.default.
    let exchange = if args.exchange.is_empty() { "amq.default" } else { args.exchange.as_str() };
    let body = json!({"properties": props, "routing_key": args.routing_key, "payload": payload,
        "payload_encoding": encoding});
    let answer = ctl
        .api
        .post(&path("/api/exchanges/{}/{}/publish", &[&ctl.vhost, exchange])?, &body)
        .or_else(about(ctl.in_vhost("exchange", exchange)))?;
    let routed = answer["routed"].as_bool().unwrap_or(false);
    if ctl.json() {
        emit(&output::json(&answer))?;
    }
    if !routed {
        let text = format!(
            "the message was not routed to any queue (exchange '{exchange}', routing key '{}')",
            args.routing_key
        );
        if args.mandatory {
            return Err(Failure::data(text));
        }
        eprintln!("Warning: {text}");
    } else {
        ctl.info("Message published");
    }
    Ok(())
}

fn get(ctl: &Ctl, args: GetArgs) -> Result<()> {
    let ackmode = match args.ackmode {
        AckMode::Requeue => "ack_requeue_true",
        AckMode::Ack => "ack_requeue_false",
        AckMode::Reject => "reject_requeue_false",
    };
    let mut body =
        json!({"count": args.count, "ackmode": ackmode, "encoding": if args.base64 { "base64" } else { "auto" }});
    if let Some(t) = args.truncate {
        body["truncate"] = json!(t);
    }
    let answer = ctl
        .api
        .post(&path("/api/queues/{}/{}/get", &[&ctl.vhost, &args.queue])?, &body)
        .or_else(about(ctl.in_vhost("queue", &args.queue)))?;
    if ctl.json() {
        return emit(&output::json(&answer));
    }
    let messages = answer.as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        ctl.info(format!("Queue '{}' is empty", args.queue));
        return Ok(());
    }
    let columns: Vec<String> =
        ["routing_key", "exchange", "message_count", "redelivered", "payload_bytes", "payload_encoding", "payload"]
            .map(String::from)
            .to_vec();
    emit(&output::items_table(&messages, &columns, true))
}

/// rabbitmqctl's `set_{vhost,user}_limits`: the given object replaces the limits (those not
/// named are cleared; a negative value clears one), one API call per limit.
fn set_limits(api: &Api, kind: &str, owner: &str, definition: &str) -> Result<()> {
    let wanted = parse_object("the limits", definition)?;
    for (k, v) in &wanted {
        if !v.is_i64() {
            return Err(Failure::data(format!("the limit {k} must be an integer, not {v}")));
        }
    }
    let current = api.get(&path(&format!("/api/{kind}/{{}}"), &[owner])?)?;
    let set: Vec<String> = current
        .as_array()
        .and_then(|a| a.first())
        .and_then(|o| o["value"].as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let one = |k: &str| path(&format!("/api/{kind}/{{}}/{{}}"), &[owner, k]);
    for (k, v) in &wanted {
        api.put(&one(k)?, &json!({"value": v}))?;
    }
    for k in set.iter().filter(|k| !wanted.contains_key(*k)) {
        api.delete(&one(k)?)?;
    }
    Ok(())
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 { format!("{d}d {h}h {m}m {s}s") } else { format!("{h}h {m}m {s}s") }
}

fn status(ctl: &Ctl) -> Result<()> {
    let o = ctl.api.get("/api/overview")?;
    let node = o["node"].as_str().unwrap_or_default().to_string();
    let n = ctl.api.get(&path("/api/nodes/{}", &[&node])?)?;
    let status = json!({
        "node": node, "product_name": o["product_name"], "product_version": o["product_version"],
        "rabbitmq_version": o["rabbitmq_version"], "uptime_ms": n["uptime"], "os_pid": n["os_pid"],
        "mem_used": n["mem_used"], "fd_used": n["fd_used"], "mem_alarm": n["mem_alarm"],
        "disk_free_alarm": n["disk_free_alarm"], "listeners": o["listeners"],
        "object_totals": o["object_totals"], "queue_totals": o["queue_totals"],
    });
    if ctl.json() {
        return emit(&output::json(&status));
    }
    let c = |v: &Value| output::cell(v);
    let mut rows: Vec<Vec<String>> = vec![
        vec!["Node".into(), node.clone()],
        vec!["Product".into(), format!("{} {}", c(&o["product_name"]), c(&o["product_version"]))],
        vec!["Uptime".into(), n["uptime"].as_u64().map(uptime).unwrap_or_default()],
        vec!["OS PID".into(), c(&n["os_pid"])],
        vec!["Memory used".into(), format!("{} bytes", c(&n["mem_used"]))],
        vec![
            "Alarms".into(),
            if n["mem_alarm"] == true || n["disk_free_alarm"] == true { "yes" } else { "none" }.into(),
        ],
    ];
    for l in o["listeners"].as_array().into_iter().flatten() {
        rows.push(vec![
            "Listener".into(),
            format!("{} on {}:{}", c(&l["protocol"]), c(&l["ip_address"]), c(&l["port"])),
        ]);
    }
    for key in ["connections", "channels", "queues", "consumers", "exchanges"] {
        rows.push(vec![format!("Total {key}"), c(&o["object_totals"][key])]);
    }
    for key in ["messages", "messages_ready", "messages_unacknowledged"] {
        rows.push(vec![format!("Queued {}", key.replace('_', " ")), c(&o["queue_totals"][key])]);
    }
    emit(&output::table(None, &rows))
}

/// Poll the readiness check until it answers ok (0), the deadline passes (75), or the login is
/// refused (77: that will not change by waiting). RabbitMQ before 3.11 has no
/// `ready-to-serve-clients`; there (404) every vhost running is the sign.
fn await_startup(ctl: &Ctl, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    ctl.info(format!("Waiting for the broker to be ready (up to {} s) ...", timeout.as_secs()));
    let mut check = "/api/health/checks/ready-to-serve-clients";
    loop {
        let last = match ctl.api.get(check) {
            Ok(_) => {
                ctl.info("The broker is ready");
                return Ok(());
            }
            Err(f) if f.code == exit::NO_PERM || f.code == exit::USAGE => return Err(f),
            Err(f) if f.status == 404 && !check.ends_with("virtual-hosts") => {
                check = "/api/health/checks/virtual-hosts";
                continue;
            }
            Err(f) => f,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::new(
                exit::TEMP_FAIL,
                format!("the broker was not ready within {} s; last: {}", timeout.as_secs(), last.message),
            ));
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}
