//! `tributary cluster scheduler | executor`: the members of a Ballista cluster that runs the SQL
//! models past one machine (`tributary sql run --cluster HOST:PORT`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tributary_pipeline::models::cluster::{self, ExecutorOptions};

use super::App;

/// Arguments of `tributary cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `cluster` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Run a Ballista scheduler (with Tributary's SQL functions) until stopped.
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
    },
    /// Run a Ballista executor that pulls tasks from a scheduler and reads the warehouse.
    Executor {
        /// The scheduler's address.
        #[arg(long, default_value = "127.0.0.1:50050")]
        scheduler: SocketAddr,
        /// Address to listen on for shuffle reads (Arrow Flight).
        #[arg(long, default_value = "127.0.0.1:50051")]
        bind: SocketAddr,
        /// Port of the executor's gRPC service.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Concurrent tasks (0 = every core).
        #[arg(long, default_value_t = 0)]
        vcores: usize,
        /// Directory for shuffle files (default: a temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

pub async fn run(app: &App, args: ClusterArgs) -> anyhow::Result<ExitCode> {
    // Members are daemons: Ballista logs through `log`; RUST_LOG overrides the level.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).try_init();
    let stop = tributary_serving::shutdown_signal();
    let served = match args.command {
        ClusterCommand::Scheduler { bind } => {
            eprintln!("Ballista scheduler listening on {bind}");
            tokio::select! {
                r = cluster::serve_scheduler(bind) => r,
                () = stop => Ok(()),
            }
        }
        ClusterCommand::Executor { scheduler, bind, grpc_port, vcores, work_dir } => {
            let warehouse = app.warehouse()?;
            eprintln!("Ballista executor on {bind} (gRPC :{grpc_port}) for scheduler {scheduler}, warehouse {}", warehouse.url());
            let opts = ExecutorOptions { scheduler, bind, grpc_port, vcores, work_dir };
            tokio::select! {
                r = cluster::serve_executor(warehouse, opts) => r,
                () = stop => Ok(()),
            }
        }
    };
    served?;
    Ok(ExitCode::SUCCESS)
}
