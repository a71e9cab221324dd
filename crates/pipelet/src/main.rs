//! The `pipelet` binary: parses the command line and hands over to the library crates.

mod client;
mod keys_command;
mod models;
mod signals;
mod wan_args;
mod worker_command;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use pipelet_server::{Application, ServeArgs};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "pipelet",
    version,
    about = "Self-hosted queue API for Wan 2.2 video generation"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(
        long,
        env = "PIPELET_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the queue API, with in-process preview workers.
    Serve(ServeArgs),
    /// Run a remote worker that pulls jobs from a server over HTTP.
    Worker(worker_command::WorkerArgs),
    /// Submit a request and wait for its video, showing its progress.
    Submit {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(flatten)]
        args: client::SubmitArgs,
    },
    /// Show a request's status in one line (--json: the server's status JSON).
    Status {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(flatten)]
        args: client::StatusArgs,
    },
    /// Cancel a queued request (--force also stops a running one).
    Cancel {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(flatten)]
        args: client::CancelArgs,
    },
    /// List your recent requests, newest first: id, model, status, created (--json: the
    /// server's page).
    List {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(flatten)]
        args: client::ListArgs,
    },
    /// Show what your key used per UTC day and model: requests by outcome, video and
    /// render seconds (--all or --key-name with an admin key: other keys'; --json: the
    /// server's report).
    Usage {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(flatten)]
        args: client::UsageArgs,
    },
    /// Wait for a request and write its MP4.
    Result {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(flatten)]
        args: client::ResultArgs,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: keys_command::KeysCommand,
    },
    /// Get and check the Wan 2.2 weights for `worker --runner wan`.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr so stdout carries only what commands print (keys, results).
    // Colours only for a person at a terminal: a file or journal would get escape codes.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let app = Application::build(config).await?;
    if let Some(key) = app.admin_key() {
        match app.admin_key_file() {
            Some(path) => println!(
                "Created the admin API key (shown once; also saved to {}):",
                path.display()
            ),
            None => println!(
                "Created the admin API key (shown once, and it could not be saved: see the log):"
            ),
        }
        println!("{key}");
    }
    let scheme = if app.tls().is_some() { "https" } else { "http" };
    println!("pipelet listening on {scheme}://{}", app.local_addr()?);
    app.run_until_stopped(signals::shutdown()).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Keys { command } => keys_command::run(command).await,
        Command::Models { command } => models::run(command).await,
        Command::Worker(args) => worker_command::run(args).await,
        Command::Submit { server, args } => client::submit(server, args).await,
        Command::Status { server, args } => client::status(server, args).await,
        Command::Cancel { server, args } => client::cancel(server, args).await,
        Command::Result { server, args } => client::result(server, args).await,
        Command::List { server, args } => client::list(server, args).await,
        Command::Usage { server, args } => client::usage(server, args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
