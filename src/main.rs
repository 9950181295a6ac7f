//! The `kuma-cluster` command: parses the command line, loads the settings and
//! hands over to the library.

use clap::{Parser, Subcommand};
use kuma_cluster::config::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kuma-cluster", version, about = "High-availability supervisor and front door for Uptime Kuma nodes")]
struct Cli {
    /// A TOML file whose keys override config/default.toml
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the migrations, the supervisor and the HTTP front
    Serve,
    /// Run the database migrations and exit
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result: anyhow::Result<()> = actix_rt::System::new().block_on(async move {
        match cli.command {
            Command::Serve => kuma_cluster::serve(settings).await?,
            Command::Migrate => kuma_cluster::migrate(&settings).await?,
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "kuma-cluster stopped");
            ExitCode::FAILURE
        }
    }
}
