//! `pool-encode`: the command-line front of the encoder. See `pool-encode encode --help`.

mod checkpoint;
mod encode;
mod progress;
mod report;
mod settings;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pool-encode",
    version,
    about = "Encode large text collections into sentence embeddings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode a file of texts into an embeddings file.
    Encode(Box<settings::EncodeArgs>),
    /// A worker process of the pool (started by `encode`, not by hand).
    #[command(hide = true)]
    Worker {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Encode(args) => {
            settings::EncodeSettings::resolve(*args).and_then(|s| encode::run(&s))
        }
        Command::Worker { args } => return pool_encode_pool::worker::main(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
