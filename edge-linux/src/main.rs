//! `fulmar`: the MQTT broker for Linux gateways. Everything lives in the `fulmar_edge`
//! library; this parses the command line, sets up logging and runs the server.

use anyhow::Context;
use clap::Parser;
use fulmar_edge::config::Command;
use fulmar_edge::{Cli, Config, Server};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    fulmar_edge::logging::init(&cli.log, cli.log_format)?;

    let config = Config::from(&cli);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fulmar")
        .build()
        .context("cannot start the tokio runtime")?;
    if let Some(Command::Bench(args)) = cli.command {
        return runtime
            .block_on(fulmar_edge::bench::run(args))
            .context("fulmar bench");
    }
    runtime.block_on(async {
        // Signal handlers first: a SIGTERM that arrives while the listeners bind must stop
        // the broker gracefully, not kill it.
        let shutdown =
            fulmar_edge::shutdown::signal().context("cannot install the signal handlers")?;
        let server = Server::bind(config).await?;
        server.run(shutdown).await?;
        anyhow::Ok(())
    })
}
