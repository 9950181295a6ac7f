//! The `kuma-cluster` command: parses the command line, loads the settings and
//! hands over to the library.

use clap::{Parser, Subcommand};
use kuma_cluster::config::Settings;
use kuma_cluster::supervisor::store::StoreError;
use kuma_cluster::tools::ops_client::{Action, OpsClient};
use kuma_cluster::tools::sim::SimConfig;
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
    /// Exit 0 if the kuma-cluster on this machine answers (the container health check)
    Health {
        /// Check readiness (database and a ready node) instead of liveness
        #[arg(long)]
        ready: bool,
    },
    /// Try it out: three simulated Kuma nodes, the supervisor and the proxy, on a fresh embedded database
    Dev,
    /// Show the cluster: supervision, capacity and every node
    Status(Remote),
    /// Show every node's health and probe state
    Nodes(Remote),
    /// Move every monitor off a node and keep it out of service
    Drain(NodeArg),
    /// Return a drained or maintenance node to service
    Undrain(NodeArg),
    /// Like drain, marked as maintenance
    Maintenance(NodeArg),
    /// Even out monitors over the ready nodes
    Rebalance {
        #[command(flatten)]
        remote: Remote,
        /// Show the plan without changing anything
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_name = "N")]
        max_moves: Option<usize>,
    },
    /// Run a simulated Kuma node (for trying kuma-cluster without Kuma)
    SimNode {
        /// The node id it registers as
        #[arg(long)]
        id: String,
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// The cluster's shared database
        #[arg(long, value_name = "URL")]
        database: String,
        /// Pace relative to a real node: 10 makes every start and stop pause, the
        /// busy health delay and the one-minute cron ten times shorter
        #[arg(long, value_name = "FACTOR", default_value_t = 1.0, value_parser = positive_factor)]
        speed: f64,
        /// How far the node's clock is ahead of this machine's, in milliseconds (negative: behind)
        #[arg(long, value_name = "MS", default_value_t = 0, allow_hyphen_values = true)]
        clock_offset_ms: i64,
        /// The Authorization value reconcile and create calls must carry (default: any)
        #[arg(long, value_name = "VALUE")]
        auth_header: Option<String>,
    },
    /// Move monitors to a node as a manual override
    Move {
        #[command(flatten)]
        remote: Remote,
        /// The node that gets the monitors
        #[arg(long, value_name = "NODE")]
        to: String,
        /// Keep them there through rebalancing
        #[arg(long)]
        pin: bool,
        #[arg(required = true, value_name = "MONITOR_ID")]
        monitors: Vec<u32>,
    },
}

/// The commands that run here rather than against a running kuma-cluster.
enum Local {
    Serve,
    Migrate,
    Dev,
    Health { ready: bool },
}

/// Where the operations API is and how to sign in.
#[derive(clap::Args)]
struct Remote {
    /// Base address of a running kuma-cluster
    #[arg(long, env = "KUMA_CLUSTER_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// One of its api.tokens
    #[arg(long, env = "KUMA_CLUSTER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct NodeArg {
    #[command(flatten)]
    remote: Remote,
    node: String,
}

fn init_logs() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        // colours for a person at a terminal, plain text for log collectors
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Runs an operator command against a running kuma-cluster.
fn remote(remote: Remote, action: Action) -> ExitCode {
    let result = actix_rt::System::new().block_on(async move {
        OpsClient::new(&remote.url, remote.token).run(&action, remote.json).await
    });
    match result {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let local = match cli.command {
        Command::Serve => Local::Serve,
        Command::Migrate => Local::Migrate,
        Command::Dev => Local::Dev,
        Command::Health { ready } => Local::Health { ready },
        Command::SimNode { id, listen, database, speed, clock_offset_ms, auth_header } => {
            init_logs();
            let clock_offset = chrono::Duration::milliseconds(clock_offset_ms);
            let config = SimConfig { id, listen, auth_header, speed, clock_offset };
            return match actix_rt::System::new().block_on(kuma_cluster::sim_node(config, &database)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Status(r) => return remote(r, Action::Status),
        Command::Nodes(r) => return remote(r, Action::Nodes),
        Command::Drain(n) => return remote(n.remote, Action::Drain(n.node)),
        Command::Undrain(n) => return remote(n.remote, Action::Undrain(n.node)),
        Command::Maintenance(n) => return remote(n.remote, Action::Maintenance(n.node)),
        Command::Rebalance { remote: r, dry_run, max_moves } => {
            return remote(r, Action::Rebalance { dry_run, max_moves })
        }
        Command::Move { remote: r, to, pin, monitors } => return remote(r, Action::Move { monitors, to, pin }),
    };
    init_logs();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result: anyhow::Result<()> = actix_rt::System::new().block_on(async move {
        match local {
            Local::Serve => kuma_cluster::serve(settings).await?,
            Local::Migrate => kuma_cluster::migrate(&settings).await?,
            Local::Dev => kuma_cluster::dev(settings).await?,
            Local::Health { ready } => {
                if !kuma_cluster::health_check(&settings, ready).await {
                    anyhow::bail!("kuma-cluster is not {}", if ready { "ready" } else { "answering" });
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // a port another process holds, or a database `migrate` cannot reach,
        // is a setting to fix, like a bad key
        Err(e) if matches!(e.downcast_ref(), Some(kuma_cluster::app::ServeError::Bind { .. }))
            || matches!(e.downcast_ref(), Some(StoreError::Unreachable { .. })) =>
        {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = %e, "kuma-cluster stopped");
            ExitCode::FAILURE
        }
    }
}

/// A speed factor: a finite number above zero, at most 1000.
fn positive_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 1000.0 => Ok(f),
        _ => Err(format!("expected a number above 0 and at most 1000, got {text:?}")),
    }
}
