//! `fulmar`: the MQTT broker for Linux gateways. Everything lives in the `fulmar_edge`
//! library; this parses the command line and runs the command asked for.
//!
//! Adding a command: a variant of [`Command`] (its arguments as a `clap::Args` struct in
//! the library module that implements it) and an arm in [`main`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fulmar_edge::Server;
use fulmar_edge::config::{self, RunArgs};

/// The `fulmar` command line.
#[derive(Debug, Parser)]
#[command(
    name = "fulmar",
    version,
    about = "Fulmar: an MQTT 3.1/3.1.1/5.0 broker for Linux gateways",
    long_about = "Fulmar: an MQTT 3.1/3.1.1/5.0 broker for Linux gateways.\n\n\
                  With no arguments it serves MQTT over TCP on 0.0.0.0:1883, keeps its data \
                  in ./fulmar-data and lets any client connect (see auth.password_file to \
                  require passwords).",
    after_help = "Configuration: defaults < the --config file < FULMAR_SECTION__KEY \
                  variables (e.g. FULMAR_LIMITS__MAX_INFLIGHT=10) < --set KEY=VALUE < the \
                  named flags above. `fulmar check-config FILE` checks a file.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command: run the broker with these flags.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (what `fulmar` without a command does).
    Run(RunArgs),
    /// Check a configuration file: print where the first mistake is (file:line:column) and
    /// exit 1, or print a summary of what it configures and exit 0.
    CheckConfig {
        /// The TOML file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Add a user to a password file (created if missing), change their password, or delete
    /// them.
    ///
    /// The file is in Mosquitto's format: `mosquitto_passwd` files work here, and the
    /// PBKDF2-SHA512 hashes written here work in Mosquitto. The password is asked twice on
    /// the terminal, without echo; when standard input is not a terminal its first line is
    /// the password; -b or --password give it on the command line (visible to other local
    /// users in `ps`).
    Passwd(fulmar_edge::auth::passwd::PasswdArgs),
    /// Load generator for any MQTT broker: `conn`, `pub`, `sub`, `pubsub` (see `fulmar
    /// bench --help`).
    Bench(fulmar_edge::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run(&args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Bench(args) => bench(args),
        Command::Passwd(args) => passwd(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fulmar: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `fulmar check-config FILE`.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    // The file alone: variables and flags are not part of what is checked.
    let config = config::load(Some(file), &[], |_| {})?;
    // The files it names must be readable and well formed too (errors name file:line).
    fulmar_edge::auth::Auth::load(&config.auth, config.limits.max_packet_size)?;
    Server::check_listeners(&config)?;
    println!("{}: OK", file.display());
    println!("{}", config::summary(&config));
    Ok(())
}

/// `fulmar passwd`.
fn passwd(args: &fulmar_edge::auth::passwd::PasswdArgs) -> anyhow::Result<()> {
    let done = fulmar_edge::auth::passwd::run(args)?;
    eprintln!("fulmar passwd: {done}");
    Ok(())
}

/// `fulmar bench`.
fn bench(args: fulmar_edge::bench::BenchArgs) -> anyhow::Result<()> {
    // Thousands of connections need thousands of file descriptors.
    if let Err(error) = fulmar_edge::fd_limit::raise() {
        eprintln!("fulmar bench: cannot raise the open-file limit: {error}");
    }
    runtime()?
        .block_on(fulmar_edge::bench::run(args))
        .context("fulmar bench")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fulmar")
        .build()
        .context("cannot start the tokio runtime")
}

/// `fulmar` / `fulmar run`: serves until SIGINT or SIGTERM.
fn run(args: &RunArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    fulmar_edge::logging::init(&config.log.level, config.log.format)?;
    match &args.config {
        Some(file) => tracing::info!("configuration from {}", file.display()),
        None => tracing::info!("no --config file: built-in defaults, variables and flags"),
    }
    open_file_limit(config.limits.max_connections.get());
    runtime()?.block_on(async {
        // Signal handlers first: a SIGTERM that arrives while the listeners bind must stop
        // the broker gracefully, not kill it.
        let shutdown =
            fulmar_edge::shutdown::signal().context("cannot install the signal handlers")?;
        let server = Server::bind(config).await?;
        server.run(shutdown).await?;
        anyhow::Ok(())
    })
}

/// Raises the open-file limit for the connections, and says when it is still too low for
/// `limits.max_connections` (the connections beyond it would fail to be accepted).
fn open_file_limit(max_connections: usize) {
    /// Descriptors besides connections: listeners, the store, the runtime's own.
    const RESERVED: u64 = 64;
    match fulmar_edge::fd_limit::raise() {
        Ok(raised) => {
            if raised.before != raised.now {
                tracing::debug!(
                    before = raised.before,
                    now = raised.now,
                    "open-file limit raised"
                );
            }
            if let Some(limit) = raised.now
                && limit < max_connections as u64 + RESERVED
            {
                tracing::warn!(
                    limit,
                    max_connections,
                    "the open-file limit (LimitNOFILE, ulimit -Hn) is below                      limits.max_connections: connections beyond about {} cannot be accepted",
                    limit.saturating_sub(RESERVED)
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_runs_the_broker() {
        let cli = Cli::try_parse_from(["fulmar", "--listen", "127.0.0.1:1"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.listen.len(), 1);
        let cli = Cli::try_parse_from(["fulmar", "check-config", "f.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig { .. })));
        // Broker flags belong to running it, not to another command.
        assert!(
            Cli::try_parse_from(["fulmar", "--listen", "127.0.0.1:1", "check-config", "f"])
                .is_err()
        );
    }
}
