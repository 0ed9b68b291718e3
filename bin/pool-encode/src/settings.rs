//! The settings of `pool-encode encode`: command-line flags over a TOML config file over
//! defaults. Every config key is a flag of the same name (`batch-size = 64` ⇔ `--batch-size 64`).
//! Relative paths are taken from the current directory, whether they come from a flag or a file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use pool_encode_encoder::model::ModelKind;
use pool_encode_encoder::{Device, Precision, Quantization};
use pool_encode_io::Shard;
use serde::Deserialize;

/// Flags of `encode`; each is optional here so a config file can supply it.
#[derive(Args, Debug, Default)]
pub struct EncodeArgs {
    /// TOML file with any of the settings below (keys named like the flags, e.g. `batch-size`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model folder (HF / sentence-transformers layout), or a hub id such as
    /// sentence-transformers/all-MiniLM-L6-v2 when built with the `hub` feature.
    #[arg(long)]
    pub model: Option<String>,
    /// Texts to encode: .jsonl (one object a line), .txt (one text a line) or .parquet (a
    /// string column); .jsonl and .txt may be gzip- or zstd-compressed (.jsonl.gz, .txt.zst, …).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Where to write the embeddings, rows in input order. Dense models: .npy or .safetensors
    /// (float32 [N, dim]) or .parquet (id, embedding); sparse ones: .jsonl (`{"id", "indices",
    /// "values"}` a line) or .parquet (id, indices, values).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// dense (a SentenceTransformer model) or sparse (a SPLADE SparseEncoder model). Default:
    /// what the model folder is (a plain *ForMaskedLM folder counts as dense unless told).
    #[arg(long)]
    pub kind: Option<String>,
    /// Worker devices, comma-separated, one worker process each: cpu (all cores), cpu:N
    /// (N threads), cuda:K, wgpu:K (builds with the cuda / wgpu feature); repeat a device for
    /// several workers on it. Default: every CUDA GPU, else one single-threaded CPU worker per core
    /// (fewer, with more threads each, where memory does not hold a model copy per core).
    #[arg(long)]
    pub devices: Option<String>,
    /// Float type of the forward pass: f32, or f16 / bf16 on GPU devices.
    #[arg(long)]
    pub precision: Option<String>,
    /// Texts per forward pass at most.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Padded tokens per forward pass at most (texts × longest text); with a large batch size,
    /// what keeps GPU memory bounded when texts are long. Default: no limit.
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    /// Batches each GPU worker runs at once (default 2): while one batch's result is read back,
    /// the next is built and launched.
    #[arg(long)]
    pub gpu_batches_in_flight: Option<usize>,
    /// Texts per chunk handed to a worker (default 1000; the input's last sorted window is cut
    /// into as many chunks as a full one, so that every worker gets a share of the end).
    #[arg(long)]
    pub chunk_size: Option<usize>,
    /// Truncate texts to this many tokens (default: the model's).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// JSON field (.jsonl) or column (.parquet) holding the text.
    #[arg(long)]
    pub text_field: Option<String>,
    /// JSON field (.jsonl) or column (.parquet) holding the record id (default: the record's
    /// 0-based index).
    #[arg(long)]
    pub id_field: Option<String>,
    /// L2-normalize every embedding.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub normalize: Option<bool>,
    /// Keep only the first N dimensions (Matryoshka models).
    #[arg(long)]
    pub truncate_dim: Option<usize>,
    /// Dense models: write quantized embeddings, as ST's `encode(precision=…)`: int8 or uint8
    /// (a byte a dimension, scaled to each dimension's range: needs --calibration), binary or
    /// ubinary (sign bits, 8 dimensions a byte: 32× smaller); float32 (default) for none.
    #[arg(long)]
    pub quantize: Option<String>,
    /// int8 / uint8: float embeddings (.npy, .safetensors or .parquet) whose per-dimension
    /// minimum and maximum set the ranges (ST's `calibration_embeddings`): a sample of the corpus
    /// encoded with the same model and settings, or a [2, dim] array of the minima and maxima
    /// (ST's `ranges`; `pool-encode quantize --ranges-output` writes one).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Sparse models: keep only each row's K largest weights (default: the model's setting).
    #[arg(long)]
    pub max_active_dims: Option<usize>,
    /// Name of one of the model's prompts (e.g. query, document) to prepend to every text.
    #[arg(long)]
    pub prompt_name: Option<String>,
    /// A literal prompt to prepend to every text.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Replace an existing output file.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub overwrite: Option<bool>,
    /// Continue an interrupted run from its last checkpoint (`<output>.checkpoint.json`); with
    /// none, start from the beginning. The finished output is the same bytes as an
    /// uninterrupted run's.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub resume: Option<bool>,
    /// Seconds between progress lines when stderr is not a terminal (default 30; 0: none). On a
    /// terminal one line is redrawn every second.
    #[arg(long)]
    pub progress_interval: Option<f64>,
    /// Encode only shard I of N (0-based) of the input: a contiguous range of its records, into
    /// `<output stem>-IIIII-of-NNNNN.<ext>` with a manifest for `pool-encode merge`. `auto`: the
    /// index (and count) from a Kubernetes Indexed Job (JOB_COMPLETION_INDEX; give the count as
    /// auto/N) or a Slurm array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT).
    #[arg(long)]
    pub shard: Option<String>,
    /// The longest record accepted, in bytes (default 16 MiB): a longer line or Parquet text is
    /// a bad record (see --rejects), read past without being held in memory.
    #[arg(long)]
    pub max_record_bytes: Option<usize>,
    /// Set bad input records (invalid JSON or UTF-8, missing or non-string text, …) aside in
    /// this .jsonl file, one `{"record", "line", "error"}` each, and go on; without it, a bad
    /// record stops the run.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
}

/// The config file: same names as the flags; an unknown key is an error.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    model: Option<String>,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    kind: Option<String>,
    devices: Option<String>,
    precision: Option<String>,
    batch_size: Option<usize>,
    max_batch_tokens: Option<usize>,
    gpu_batches_in_flight: Option<usize>,
    chunk_size: Option<usize>,
    max_seq_length: Option<usize>,
    text_field: Option<String>,
    id_field: Option<String>,
    normalize: Option<bool>,
    truncate_dim: Option<usize>,
    quantize: Option<String>,
    calibration: Option<PathBuf>,
    max_active_dims: Option<usize>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    overwrite: Option<bool>,
    resume: Option<bool>,
    progress_interval: Option<f64>,
    shard: Option<String>,
    max_record_bytes: Option<usize>,
    rejects: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct EncodeSettings {
    pub model: String,
    pub input: PathBuf,
    /// Where this run writes: a shard's own output when sharded.
    pub output: PathBuf,
    /// The output a sharded run's shards merge into (`output` otherwise).
    pub merged_output: PathBuf,
    pub shard: Option<Shard>,
    /// Bad records go here (a shard's own file when sharded) instead of stopping the run.
    pub rejects: Option<PathBuf>,
    pub max_record_bytes: usize,
    /// `None`: what the model folder is.
    pub kind: Option<ModelKind>,
    /// Empty: the pool's default (every CUDA GPU, else CPU workers).
    pub devices: Vec<Device>,
    pub precision: Precision,
    pub batch_size: usize,
    pub max_batch_tokens: Option<usize>,
    /// `None`: the encoder's default.
    pub gpu_batches_in_flight: Option<usize>,
    pub chunk_size: usize,
    pub max_seq_length: Option<usize>,
    pub text_field: String,
    pub id_field: Option<String>,
    pub normalize: bool,
    pub truncate_dim: Option<usize>,
    /// `None`: float32 rows.
    pub quantize: Option<Quantization>,
    /// The file int8 / uint8 ranges come from.
    pub calibration: Option<PathBuf>,
    pub max_active_dims: Option<usize>,
    pub prompt_name: Option<String>,
    pub prompt: Option<String>,
    pub overwrite: bool,
    pub resume: bool,
    /// `None`: no progress display.
    pub progress_interval: Option<std::time::Duration>,
}

impl EncodeSettings {
    pub fn resolve(args: EncodeArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => read_config(path)?,
            None => ConfigFile::default(),
        };
        let devices = match args.devices.or(file.devices) {
            Some(list) => list
                .split(',')
                .map(|d| d.parse::<Device>())
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let precision = match args.precision.or(file.precision) {
            Some(p) => p.parse()?,
            None => Precision::F32,
        };
        let positive =
            |value: Option<usize>, default: usize, flag: &str| match value.unwrap_or(default) {
                0 => bail!("--{flag} must be at least 1"),
                n => Ok(n),
            };
        let shard = match args.shard.or(file.shard) {
            Some(spec) => Some(Shard::parse(&spec).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let quantize = match args.quantize.or(file.quantize).as_deref() {
            None | Some("float32") => None,
            Some(name) => Some(name.parse::<Quantization>().map_err(|_| {
                anyhow::anyhow!(
                    "--quantize must be float32, int8, uint8, binary or ubinary, not {name:?}"
                )
            })?),
        };
        let calibration = args.calibration.or(file.calibration);
        match (quantize, &calibration) {
            (Some(q), None) if q.needs_ranges() => bail!(
                "--quantize {q} needs --calibration: float embeddings (e.g. a sample of the input encoded with the same settings) whose per-dimension minimum and maximum set the {q} ranges; or encode to float32 and run `pool-encode quantize --quantize {q}`, which takes them from every row, as ST's encode(precision=\"{q}\") does"
            ),
            (q, Some(path)) if !q.is_some_and(Quantization::needs_ranges) => bail!(
                "--calibration {} applies to --quantize int8 or uint8 only",
                path.display()
            ),
            _ => {}
        }
        let merged_output: PathBuf = required(args.output.or(file.output), "output")?;
        let per_shard = |path: PathBuf| match shard {
            Some(shard) => shard.output_path(&path),
            None => path,
        };
        Ok(EncodeSettings {
            model: required(args.model.or(file.model), "model")?,
            input: required(args.input.or(file.input), "input")?,
            output: per_shard(merged_output.clone()),
            merged_output,
            shard,
            rejects: args.rejects.or(file.rejects).map(per_shard),
            max_record_bytes: positive(
                args.max_record_bytes.or(file.max_record_bytes),
                pool_encode_io::input::DEFAULT_MAX_RECORD_BYTES,
                "max-record-bytes",
            )?,
            kind: match args.kind.or(file.kind).as_deref() {
                None => None,
                Some("dense") => Some(ModelKind::Dense),
                Some("sparse") => Some(ModelKind::Sparse),
                Some(other) => bail!("--kind must be dense or sparse, not {other:?}"),
            },
            devices,
            precision,
            batch_size: positive(args.batch_size.or(file.batch_size), 32, "batch-size")?,
            max_batch_tokens: args
                .max_batch_tokens
                .or(file.max_batch_tokens)
                .map(|n| positive(Some(n), n, "max-batch-tokens"))
                .transpose()?,
            gpu_batches_in_flight: args
                .gpu_batches_in_flight
                .or(file.gpu_batches_in_flight)
                .map(|n| positive(Some(n), n, "gpu-batches-in-flight"))
                .transpose()?,
            chunk_size: positive(args.chunk_size.or(file.chunk_size), 1000, "chunk-size")?,
            max_seq_length: args.max_seq_length.or(file.max_seq_length),
            text_field: args
                .text_field
                .or(file.text_field)
                .unwrap_or_else(|| "text".into()),
            id_field: args.id_field.or(file.id_field),
            normalize: args.normalize.or(file.normalize).unwrap_or(false),
            truncate_dim: args.truncate_dim.or(file.truncate_dim),
            quantize,
            calibration,
            max_active_dims: args
                .max_active_dims
                .or(file.max_active_dims)
                .map(|n| positive(Some(n), n, "max-active-dims"))
                .transpose()?,
            prompt_name: args.prompt_name.or(file.prompt_name),
            prompt: args.prompt.or(file.prompt),
            overwrite: args.overwrite.or(file.overwrite).unwrap_or(false),
            resume: args.resume.or(file.resume).unwrap_or(false),
            progress_interval: match args.progress_interval.or(file.progress_interval) {
                None => Some(std::time::Duration::from_secs(30)),
                Some(0.0) => None,
                Some(s) if s.is_finite() && s > 0.0 => Some(std::time::Duration::from_secs_f64(s)),
                Some(s) => bail!("--progress-interval must be a number of seconds ≥ 0, not {s}"),
            },
        })
    }
}

/// A setting that must come from a flag or the config file.
fn required<T>(value: Option<T>, flag: &str) -> Result<T> {
    value.with_context(|| format!("--{flag} is required (as a flag or a config key)"))
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read config", path.display()))?;
    // toml's message already names the line, column and key.
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example configs in `configs/` use only keys that exist (each is also a flag).
    #[test]
    fn example_configs_parse() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let config = read_config(&path).unwrap_or_else(|e| panic!("{e:#}"));
                assert!(config.model.is_some(), "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 4, "found {seen} configs");
    }
}
