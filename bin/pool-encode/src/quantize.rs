//! `pool-encode quantize`: a finished float32 output made int8 / uint8 / binary / ubinary, as
//! ST's `encode(precision=…)` makes a whole output: int8 / uint8 take each dimension's range from
//! every row of the input (a first pass over it) unless `--calibration` gives them. The rows
//! stream through a block at a time, so the input may be larger than memory.
//!
//! `encode --quantize` quantizes while it encodes, but int8 / uint8 there need ranges before the
//! first row is written; this is the way to ST's exact semantics for a large corpus.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pool_encode_encoder::model::ModelKind;
use pool_encode_encoder::{Quantization, QuantizationRanges, Quantizer, RangesBuilder};
use pool_encode_io::{
    DenseFormat, DenseReader, DenseWriter, OutputFormat, RowWriter, ValueType, f32_bytes,
    partial_path,
};

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// A float32 output of `encode` (.npy, .safetensors or .parquet; a merged sharded run too).
    #[arg(long)]
    pub input: PathBuf,
    /// Where the quantized rows go: .npy, .safetensors or .parquet (by the extension; Parquet
    /// keeps the ids, so its input must be Parquet too).
    #[arg(long)]
    pub output: PathBuf,
    /// int8 or uint8 (a byte a dimension, scaled to each dimension's range), binary or ubinary
    /// (sign bits, 8 dimensions a byte).
    #[arg(long, value_parser = parse_quantization)]
    pub quantize: Quantization,
    /// int8 / uint8: take the ranges from these float embeddings (ST's `calibration_embeddings`;
    /// any file this command reads, or a [2, dim] array of minima and maxima, ST's `ranges`)
    /// instead of from the input.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// int8 / uint8: also save the ranges used, a [2, dim] float32 array of the minima and
    /// maxima (.npy or .safetensors), to quantize queries the same way (give it to
    /// --calibration, or to ST as `ranges`).
    #[arg(long)]
    pub ranges_output: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long)]
    pub overwrite: bool,
}

fn parse_quantization(name: &str) -> std::result::Result<Quantization, String> {
    match name {
        "float32" => Err("float32 leaves the embeddings as they are: nothing to do".into()),
        name => name.parse().map_err(|e| format!("{e}")),
    }
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let quantization = args.quantize;
    let format = OutputFormat::for_output(&args.output, ModelKind::Dense)?;
    if !quantization.needs_ranges() {
        for (flag, path) in [
            ("--calibration", &args.calibration),
            ("--ranges-output", &args.ranges_output),
        ] {
            if let Some(path) = path {
                bail!(
                    "{flag} {} applies to --quantize int8 or uint8 only",
                    path.display()
                );
            }
        }
    }
    let ranges_format = match &args.ranges_output {
        Some(path) => Some(DenseFormat::from_path(path).with_context(|| {
            format!(
                "{}: --ranges-output must be .npy or .safetensors",
                path.display()
            )
        })?),
        None => None,
    };
    for path in [Some(&args.output), args.ranges_output.as_ref()]
        .into_iter()
        .flatten()
    {
        if same_file(path, &args.input) {
            bail!("{}: is the input; write to another file", path.display());
        }
        if path.exists() && !args.overwrite {
            bail!("{}: exists (--overwrite replaces it)", path.display());
        }
    }
    let reader = open_floats(&args.input)?;
    if format.has_ids() && !reader.has_ids() {
        bail!(
            "{}: a Parquet output keeps each row's id, and {} has none: write .npy or .safetensors",
            args.output.display(),
            args.input.display()
        );
    }
    let dim = reader.dim();
    // The first pass, where the ranges come from the input.
    let (ranges, source) = match (quantization.needs_ranges(), &args.calibration) {
        (false, _) => (None, None),
        (true, Some(calibration)) => (Some(float_file_ranges(calibration)?), Some(calibration)),
        (true, None) => {
            if reader.rows() < 2 {
                bail!(
                    "{}: {} rows: {quantization} ranges need at least 2 (give --calibration)",
                    args.input.display(),
                    reader.rows()
                );
            }
            (Some(float_file_ranges(&args.input)?), Some(&args.input))
        }
    };
    let quantizer =
        Quantizer::new(quantization, dim, ranges.as_ref()).map_err(|e| match source {
            Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
            None => e.into(),
        })?;
    let written = write_quantized(reader, &args.output, format, &quantizer);
    if written.is_err() {
        // Not resumable (a run is one pass over a file): leave nothing that looks half done.
        let _ = std::fs::remove_file(partial_path(&args.output));
    }
    let rows = written?;
    if let (Some(path), Some(format), Some(ranges)) = (&args.ranges_output, ranges_format, &ranges)
    {
        save_ranges(path, format, ranges)?;
    }
    eprintln!(
        "pool-encode: quantized {rows} rows of {dim} float32 values to {quantization} ({} bytes a row){}",
        quantizer.output_dim(),
        match source {
            Some(path) if path == &args.input => " with ranges from every input row".to_string(),
            Some(path) => format!(" with ranges from {}", path.display()),
            None => String::new(),
        }
    );
    println!("{}", args.output.display());
    Ok(())
}

/// Opens a file of float32 (or float64) embeddings.
fn open_floats(path: &Path) -> Result<DenseReader> {
    let reader = DenseReader::open(path)?;
    if reader.values() != ValueType::F32 {
        bail!(
            "{}: holds {} values: quantize takes float32 embeddings",
            path.display(),
            reader.values().name()
        );
    }
    Ok(reader)
}

/// int8 / uint8 ranges: each dimension's minimum and maximum over the float embeddings in
/// `path` (a [2, dim] file of minima and maxima gives those back), read a block at a time.
pub fn float_file_ranges(path: &Path) -> Result<QuantizationRanges> {
    let mut reader = open_floats(path)?;
    let mut ranges = RangesBuilder::new(reader.dim());
    while let Some(block) = reader.next_block()? {
        let values = block.f32_values(path)?;
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: row {} holds a value that is not a finite number",
                path.display(),
                ranges.rows() + (at / reader.dim()) as u64 + 1
            );
        }
        ranges.add_rows(&values);
    }
    ranges
        .finish()
        .with_context(|| format!("{}: cannot compute quantization ranges", path.display()))
}

/// The second pass: every row quantized, in order, with its id where the output keeps ids.
fn write_quantized(
    mut reader: DenseReader,
    output: &Path,
    format: OutputFormat,
    quantizer: &Quantizer,
) -> Result<u64> {
    let input = reader.path().to_path_buf();
    let values = ValueType::of(Some(quantizer.quantization()));
    let mut writer = RowWriter::create(output, format, quantizer.output_dim(), values)?;
    let mut bytes = Vec::new();
    while let Some(block) = reader.next_block()? {
        bytes.clear();
        quantizer.quantize_into(&block.f32_values(&input)?, &mut bytes);
        let ids = block.ids.unwrap_or_default();
        writer.write_dense(&bytes, |i| ids.get(i).map_or("", String::as_str))?;
    }
    let rows = writer.rows();
    writer.finish()?;
    Ok(rows)
}

/// ST's `ranges`: a [2, dim] float32 array, minima then maxima.
fn save_ranges(path: &Path, format: DenseFormat, ranges: &QuantizationRanges) -> Result<()> {
    let mut writer = DenseWriter::create(path, format, ranges.dim(), ValueType::F32)?;
    writer.write_rows(&f32_bytes(ranges.min()))?;
    writer.write_rows(&f32_bytes(ranges.max()))?;
    writer.finish()?;
    Ok(())
}

/// Whether two paths name one file (`b` exists; `a` may not).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
