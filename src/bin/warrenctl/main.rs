//! `warrenctl`: manage a Warren broker through its management HTTP API (RabbitMQ's paths, so it
//! works against RabbitMQ too), with rabbitmqctl's verb names and exit codes. See
//! `warrenctl --help` and the README's "warrenctl" section.

mod api;
mod cli;
mod commands;
mod output;

use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;

use crate::api::{Api, exit};
use crate::cli::{Cli, Command};
use crate::commands::Ctl;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => exit::USAGE,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // A request may not outlast await_startup's own deadline.
    let mut timeout = Duration::from_secs(cli.request_timeout.max(1));
    if let Command::AwaitStartup { timeout: wait } = &cli.command {
        timeout = timeout.min(Duration::from_secs((*wait).max(1)));
    }
    let ctl = Ctl {
        api: Api::new(&cli.url, &cli.user, &cli.password, timeout),
        vhost: cli.vhost,
        format: cli.format,
        quiet: cli.quiet,
    };
    if let Err(f) = commands::run(&ctl, cli.command) {
        eprintln!("Error: {}", f.message);
        std::process::exit(f.code);
    }
}
