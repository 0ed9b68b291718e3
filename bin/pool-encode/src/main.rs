//! `pool-encode`: the command-line front of the encoder. See `pool-encode encode --help`.

mod checkpoint;
mod encode;
mod progress;
mod quantize;
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
    /// Join the outputs of a sharded run (`encode --shard I/N`) into one file, after checking
    /// that every shard is complete and that all agree (counts, model, settings, checksums).
    Merge {
        /// The output the shards were run with (`--output` of `encode`); the shards' files and
        /// manifests are found next to it.
        #[arg(long)]
        output: std::path::PathBuf,
        /// Replace an existing merged output.
        #[arg(long)]
        overwrite: bool,
    },
    /// Quantize a finished float32 output (int8, uint8, binary, ubinary), as ST's
    /// `encode(precision=…)`: int8 / uint8 ranges from every row of it, or from --calibration.
    Quantize(quantize::QuantizeArgs),
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
        Command::Merge { output, overwrite } => merge(&output, overwrite),
        Command::Quantize(args) => quantize::run(&args),
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

fn merge(output: &std::path::Path, overwrite: bool) -> anyhow::Result<()> {
    let merged = pool_encode_io::shard::merge(output, overwrite)?;
    eprintln!(
        "pool-encode: merged {} shards: {} rows{} (sha256 {})",
        merged.shards,
        merged.rows,
        match merged.rejected {
            0 => String::new(),
            n => format!(", {n} records rejected (see the shards' rejects files)"),
        },
        merged.sha256
    );
    println!("{}", merged.output.display());
    Ok(())
}
