//! The command line: global options and one subcommand, rabbitmqctl's verb names where it has
//! one (`add_user`, `set_permissions`, …).

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "warrenctl",
    version,
    about = "Manage a Warren (or RabbitMQ) broker through its management HTTP API",
    after_help = "Exit codes: 0 ok, 64 usage, 65 data error (bad input, object not found, refused by \
                  validation), 69 broker unavailable, 70 other errors, 73 cannot write the output file, \
                  75 timed out (await_startup), 77 login failed or not permitted."
)]
pub struct Cli {
    /// Base URL of the management API.
    #[arg(long, env = "WARREN_URL", default_value = "http://127.0.0.1:15672", global = true)]
    pub url: String,
    /// User to log in as.
    #[arg(long, env = "WARREN_USER", default_value = "guest", global = true)]
    pub user: String,
    /// Password of that user.
    #[arg(long, env = "WARREN_PASSWORD", default_value = "guest", global = true, hide_env_values = true)]
    pub password: String,
    /// Virtual host the command works in.
    #[arg(short = 'p', long, env = "WARREN_VHOST", default_value = "/", global = true)]
    pub vhost: String,
    /// Output: aligned columns, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// No informational lines (they go to standard error).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Seconds one HTTP request may take.
    #[arg(long, default_value_t = 30, global = true)]
    pub request_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

// Positional arguments must not share an id with a global option (`user`, `password`), or
// clap fills the option with them: hence `username` and `new_password`.
#[derive(Subcommand, Debug)]
#[command(rename_all = "snake_case")]
pub enum Command {
    /// List objects (queues, exchanges, …) with rabbitmqctl's default columns.
    List(ListArgs),
    /// Declare a queue, an exchange or a binding.
    #[command(subcommand)]
    Declare(Declare),
    /// Delete a queue, an exchange or a binding.
    #[command(subcommand)]
    Delete(Delete),
    /// Remove every ready message of a queue.
    #[command(alias = "purge_queue")]
    Purge {
        queue: String,
    },
    /// Publish one message (the payload from the argument, or standard input).
    Publish(PublishArgs),
    /// Fetch messages from a queue (as the management UI's "get messages").
    Get(GetArgs),
    /// Create a user (the password from standard input when not given).
    AddUser {
        name: String,
        #[arg(value_name = "PASSWORD")]
        new_password: Option<String>,
        /// Comma-separated tags, e.g. administrator or management.
        #[arg(long, default_value = "")]
        tags: String,
    },
    DeleteUser {
        name: String,
    },
    /// Change a user's password (from standard input when not given), keeping its tags.
    ChangePassword {
        name: String,
        #[arg(value_name = "PASSWORD")]
        new_password: Option<String>,
    },
    /// Replace a user's tags (none given: no tags).
    SetUserTags {
        name: String,
        tags: Vec<String>,
    },
    AddVhost {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Comma-separated tags.
        #[arg(long, default_value = "")]
        tags: String,
        /// classic or quorum.
        #[arg(long = "default-queue-type")]
        default_queue_type: Option<String>,
    },
    DeleteVhost {
        name: String,
    },
    /// Set a user's configure, write and read patterns in the vhost (-p).
    SetPermissions {
        #[arg(value_name = "USER")]
        username: String,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        #[arg(value_name = "USER")]
        username: String,
    },
    /// Set a policy in the vhost (-p): NAME PATTERN DEFINITION(JSON).
    SetPolicy {
        name: String,
        pattern: String,
        definition: String,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        #[arg(long = "apply-to", value_enum, default_value_t = ApplyTo::All)]
        apply_to: ApplyTo,
    },
    ClearPolicy {
        name: String,
    },
    /// Set the vhost's limits to a JSON object, e.g. '{"max-connections": 64, "max-queues": 10}';
    /// limits not named are cleared, a negative value clears one (as rabbitmqctl).
    SetVhostLimits {
        definition: String,
    },
    /// Set a user's limits to a JSON object, e.g. '{"max-connections": 5, "max-channels": 20}'.
    SetUserLimits {
        #[arg(value_name = "USER")]
        username: String,
        definition: String,
    },
    /// Write the broker's definitions (users, vhosts, queues, …) to a file, or - for stdout.
    #[command(alias = "export_definitions")]
    Export {
        file: String,
    },
    /// Load definitions from a file, or - for stdin.
    #[command(alias = "import_definitions")]
    Import {
        file: String,
    },
    /// Close a connection (its name as `list connections` shows it).
    CloseConnection {
        name: String,
        #[arg(default_value = "Closed via warrenctl")]
        reason: String,
    },
    /// Node, version, uptime, listeners and object totals.
    Status,
    /// Wait until the broker is up and ready to serve clients.
    AwaitStartup {
        /// Give up after this many seconds (exit 75).
        #[arg(long, short = 't', default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Users,
    Vhosts,
    Permissions,
    Policies,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(value_enum)]
    pub kind: ListKind,
    /// Comma-separated columns (API field names; dots reach into objects, e.g. queue.name).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Every vhost, not only -p's (queues, exchanges, bindings, consumers, permissions, policies).
    #[arg(long)]
    pub all_vhosts: bool,
    /// Leave out the header row of the table.
    #[arg(long)]
    pub no_table_headers: bool,
}

/// Arguments as a JSON object and/or `key=value` pairs (a value that parses as JSON is taken as
/// such, `x-max-length=10` is a number; anything else is a string).
#[derive(Args, Debug, Default)]
pub struct Arguments {
    /// A JSON object of arguments.
    #[arg(long)]
    pub arguments: Option<String>,
    /// One argument as key=value (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub arg: Vec<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationType {
    Queue,
    Exchange,
}

#[derive(Args, Debug)]
pub struct BindingArgs {
    /// The source exchange.
    #[arg(long)]
    pub source: String,
    #[arg(long)]
    pub destination: String,
    #[arg(long, value_enum, default_value_t = DestinationType::Queue)]
    pub destination_type: DestinationType,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    #[command(flatten)]
    pub arguments: Arguments,
}

#[derive(Subcommand, Debug)]
pub enum Declare {
    Queue {
        name: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        /// classic or quorum (sets x-queue-type).
        #[arg(long = "type")]
        queue_type: Option<String>,
        #[command(flatten)]
        arguments: Arguments,
    },
    Exchange {
        name: String,
        /// direct, fanout, topic, headers, …
        #[arg(long = "type", default_value = "direct")]
        kind: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        #[arg(long)]
        internal: bool,
        #[command(flatten)]
        arguments: Arguments,
    },
    Binding(BindingArgs),
}

#[derive(Subcommand, Debug)]
pub enum Delete {
    Queue {
        name: String,
        /// Only if it has no consumers.
        #[arg(long)]
        if_unused: bool,
        /// Only if it has no messages.
        #[arg(long)]
        if_empty: bool,
    },
    Exchange {
        name: String,
        /// Only if nothing is bound to it.
        #[arg(long)]
        if_unused: bool,
    },
    Binding(BindingArgs),
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Exchange ("" is the default exchange).
    #[arg(short, long, default_value = "")]
    pub exchange: String,
    #[arg(short = 'k', long, default_value = "")]
    pub routing_key: String,
    /// The body; read from standard input when absent or "-".
    pub payload: Option<String>,
    /// Message properties as JSON, e.g. '{"delivery_mode": 2, "headers": {"a": 1}}'.
    #[arg(long)]
    pub properties: Option<String>,
    /// One property as key=value (repeatable), e.g. content_type=text/plain.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub property: Vec<String>,
    /// One header as key=value (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub header: Vec<String>,
    /// Exit 65 when no queue received the message.
    #[arg(long)]
    pub mandatory: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Give the messages back to the queue (ack_requeue_true).
    Requeue,
    /// Remove them (ack_requeue_false).
    Ack,
    /// Reject them without requeueing (dead-lettered if the queue has a DLX).
    Reject,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    pub queue: String,
    #[arg(short, long, default_value_t = 1)]
    pub count: u64,
    #[arg(long, value_enum, default_value_t = AckMode::Requeue)]
    pub ackmode: AckMode,
    /// Always show payloads base64-encoded (otherwise only those that are not UTF-8).
    #[arg(long)]
    pub base64: bool,
    /// Show at most this many bytes of each payload.
    #[arg(long)]
    pub truncate: Option<u64>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyTo {
    All,
    Queues,
    Exchanges,
}
