//! The `syncd` binary: parses arguments and starts the engine. Everything it
//! does lives in the `syncd` library so tests and benchmarks run the same
//! code.

use clap::{Parser, Subcommand};

// Applying a batch allocates and frees a few small values per row; glibc's
// allocator spent a tenth of an apply consolidating them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use syncd::config::Config;

/// Keeps SQLite databases in sync between machines through a shared folder
/// or an S3 bucket.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, env = "SYNCD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log filter, for example `info`, `debug` or `syncd=debug`.
    #[arg(long, env = "SYNCD_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT (the default).
    Run,
    /// Run one full sync cycle for every configured database, then exit.
    Once,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let Some(config_path) = args.config.clone().or_else(default_config_path) else {
        eprintln!("syncd: no configuration: pass --config FILE or set SYNCD_CONFIG");
        return ExitCode::from(2);
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syncd: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match args.command.unwrap_or(Command::Run) {
        Command::Once => syncd::once::run(&config),
        Command::Run => syncd::service::run_blocking(config_path, config),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let path = base.join("syncd").join("config.toml");
    path.exists().then_some(path)
}
