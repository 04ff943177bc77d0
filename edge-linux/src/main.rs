//! `fulmar`: the MQTT broker for Linux gateways. Everything lives in the `fulmar_edge`
//! library; this parses the command line, sets up logging and runs the server.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use fulmar_edge::{Cli, Config, Server};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log)
        .with_context(|| format!("invalid --log value {:?}", cli.log))?;
    // Logs go to stderr (stdout stays free for commands that print results); colours only
    // on a terminal, so files and journald get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = Config::from(&cli);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fulmar")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        // Signal handlers first: a SIGTERM that arrives while the listeners bind must stop
        // the broker gracefully, not kill it.
        let shutdown =
            fulmar_edge::shutdown::signal().context("cannot install the signal handlers")?;
        let server = Server::bind(config).await?;
        server.run(shutdown).await;
        anyhow::Ok(())
    })
}
