//! The `warren` binary: command line, logging, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use warren::broker::Broker;
use warren::config::Config;
use warren::server;

/// Warren: an AMQP 0-9-1 message broker, a drop-in replacement for RabbitMQ.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); see config/warren.toml for every key and its default.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding the config file (default 127.0.0.1:5672).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Directory for durable data, overriding the config file (default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the management HTTP API, overriding the config file (default
    /// 127.0.0.1:15672; "" turns it off).
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<String>,
    /// Address of the Prometheus endpoint, overriding the config file (default
    /// 127.0.0.1:15692; "" turns it off).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<String>,
    /// Address of RabbitMQ's stream protocol listener, overriding the config file (default
    /// off; RabbitMQ's port is 5552; "" turns it off).
    #[arg(long, value_name = "ADDR:PORT")]
    stream_listen: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("warren: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(m) = args.metrics_listen {
        if let Err(e) = warren::config::listen_address("--metrics-listen", &m) {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
        config.prometheus.listen = m;
    }
    if let Some(s) = args.stream_listen {
        if let Err(e) = warren::config::listen_address("--stream-listen", &s) {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
        config.stream.listen = s;
    }
    if let Some(h) = args.http_listen {
        config.management.listen = h;
        if let Err(e) = config.management.address() {
            eprintln!("warren: --http-listen: {e}");
            return ExitCode::from(2);
        }
    }
    init_logging(&config);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(warren::protocol::fields::THREAD_STACK)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Opened on a runtime worker: restoring a large node starts a task per queue, which
        // is cheap from a worker and a thread wake-up per task from outside one.
        let opened = tokio::spawn(async move { Broker::open(config) }).await;
        let broker = match opened.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) {
            Ok(b) => b,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match server::bind(&broker).await {
            Ok(l) => l,
            Err(e) => {
                error!(
                    "cannot listen on {}: {e} (is another broker running? try --listen 127.0.0.1:5673)",
                    broker.config.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let tls = match server::bind_tls(&broker).await {
            Ok(t) => t,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(t) = &tls {
            let addr = server::local_addr(&t.listener);
            broker.add_listener("amqp/ssl", addr);
            info!("listening for amqps on {addr}");
            println!("listening for amqps on {addr}");
        }
        // The certificate of amqps, also that of the API when it is served over HTTPS and of
        // the stream protocol's TLS listener.
        let others = broker.config.management.tls || !broker.config.stream.tls_listen.is_empty();
        let certificates = match (&tls, others) {
            (Some(t), _) => Some(t.tls.clone()),
            (None, true) => match warren::tls::Tls::load(&broker.config.tls) {
                Ok(t) => Some(t),
                Err(e) => {
                    error!("management.tls / stream.tls_listen: {e} (set them in [tls])");
                    return ExitCode::FAILURE;
                }
            },
            (None, false) => None,
        };
        if let Some(reloadable) = certificates.clone() {
            tokio::spawn(async move {
                let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    match reloadable.reload() {
                        Ok(()) => info!("SIGHUP: TLS certificates reloaded"),
                        Err(e) => error!("SIGHUP: TLS certificates not reloaded, the previous ones stay in use: {e}"),
                    }
                }
            });
        }
        match warren::management::bind(&broker).await {
            Ok(Some(l)) => {
                let addr = server::local_addr(&l);
                let https = certificates.clone().filter(|_| broker.config.management.tls);
                let scheme = if https.is_some() { "https" } else { "http" };
                broker.add_listener(if https.is_some() { "https" } else { "http" }, addr);
                info!("management API listening on {scheme}://{addr}/api/");
                println!("management API listening on {addr}");
                tokio::spawn(warren::management::serve(l, broker.clone(), https));
            }
            Ok(None) => {}
            Err(e) => {
                error!(
                    "cannot listen for the management API on {}: {e} (is RabbitMQ or another Warren running? change management.listen or pass --http-listen ADDR:PORT, or \"\" to turn it off)",
                    broker.config.management.listen
                );
                return ExitCode::FAILURE;
            }
        }
        match warren::management::bind_metrics(&broker).await {
            Ok(Some(l)) => {
                let addr = server::local_addr(&l);
                broker.add_listener("prometheus", addr);
                info!("Prometheus metrics on http://{addr}/metrics");
                println!("prometheus metrics listening on {addr}");
                tokio::spawn(warren::management::prometheus::serve(l, broker.clone()));
            }
            Ok(None) => {}
            Err(e) => {
                error!(
                    "cannot listen for Prometheus on {}: {e} (change prometheus.listen or pass --metrics-listen ADDR:PORT, or \"\" to turn it off)",
                    broker.config.prometheus.listen
                );
                return ExitCode::FAILURE;
            }
        }
        let streams = match warren::stream::server::bind(&broker).await {
            Ok(l) => l,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let streams_tls = match warren::stream::server::bind_tls(&broker).await {
            Ok(l) => l.zip(certificates.clone()),
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some((l, _)) = &streams_tls {
            let addr = server::local_addr(l);
            broker.add_listener("stream/ssl", addr);
            info!("stream protocol listening for TLS on {addr}");
            println!("stream protocol listening for TLS on {addr}");
        }
        if let Some(l) = &streams {
            let addr = server::local_addr(l);
            broker.add_listener("stream", addr);
            info!("stream protocol listening on {addr}");
            println!("stream protocol listening on {addr}");
        }
        if streams.is_some() || streams_tls.is_some() {
            tokio::spawn(warren::stream::server::run(streams, streams_tls, broker.clone()));
        }
        let addr = server::local_addr(&listener);
        broker.add_listener("amqp", addr);
        info!("listening on {addr}");
        // Tooling waits for this exact line on stdout.
        println!("listening on {addr}");
        let shutdown = broker.shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received, shutting down");
            shutdown.cancel();
        });
        // Accepting on a runtime worker: each connection's task then starts on that worker's
        // queue instead of waking a worker thread per accepted connection.
        if let Err(e) = tokio::spawn(server::run(listener, tls, broker.clone())).await {
            std::panic::resume_unwind(e.into_panic());
        }
        broker.checkpoint_definitions();
        info!("stopped");
        ExitCode::SUCCESS
    })
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
