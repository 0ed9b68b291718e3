//! `pool-encode encode`: stream records from the input, encode them chunk by chunk, append the
//! rows to the output. The output is written under `<output>.partial` and renamed only when
//! every record is in, so a failed or interrupted run never leaves a file that looks complete.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use pool_encode_encoder::{EncodeOptions, SentenceEncoder};
use pool_encode_io::{InputOptions, InputReader, NpyWriter, partial_path};

use crate::settings::EncodeSettings;

pub fn run(settings: &EncodeSettings) -> Result<()> {
    let output = &settings.output;
    match output.extension().and_then(|e| e.to_str()) {
        Some("npy") => {}
        _ => bail!(
            "{}: unsupported output format (supported: .npy)",
            output.display()
        ),
    }
    if output.exists() && !settings.overwrite {
        bail!(
            "{}: output exists (pass --overwrite to replace it)",
            output.display()
        );
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create folder", parent.display()))?;
    }
    let mut reader = InputReader::open(
        &settings.input,
        InputOptions {
            text_field: settings.text_field.clone(),
            id_field: settings.id_field.clone(),
        },
    )?;

    let started = Instant::now();
    let mut encoder = SentenceEncoder::load(&settings.model, settings.device)?;
    if let Some(n) = settings.max_seq_length {
        encoder.set_max_seq_length(n)?;
    }
    let options = EncodeOptions {
        batch_size: settings.batch_size,
        normalize_embeddings: settings.normalize,
        truncate_dim: settings.truncate_dim,
        prompt_name: settings.prompt_name.clone(),
        prompt: settings.prompt.clone(),
    };
    let dim = settings
        .truncate_dim
        .map_or(encoder.embedding_dimension(), |d| {
            d.min(encoder.embedding_dimension())
        });
    eprintln!(
        "pool-encode: {} ({} dims, max_seq_length {}) on {}",
        settings.model,
        dim,
        encoder.max_seq_length(),
        settings.device
    );
    let loaded = Instant::now();

    let mut writer = NpyWriter::create(output, dim)?;
    let mut chunk: Vec<String> = Vec::with_capacity(settings.chunk_size);
    loop {
        // A bad record stops the run, but only after the records before it are written.
        let next = reader.next().transpose();
        if let Ok(Some(record)) = &next {
            chunk.push(record.text.clone());
        }
        let end_of_chunk = !matches!(next, Ok(Some(_))) || chunk.len() == settings.chunk_size;
        if end_of_chunk && !chunk.is_empty() {
            let embeddings = encoder.encode(&chunk, &options)?;
            writer.write_rows(embeddings.as_slice())?;
            chunk.clear();
        }
        match next {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => bail!(
                "{e}\n{} embeddings computed before this error are in {} (the output was not completed)",
                writer.rows(),
                partial_path(output).display()
            ),
        }
    }
    let rows = writer.rows();
    let path = writer.finish()?;
    let seconds = loaded.elapsed().as_secs_f64();
    eprintln!(
        "pool-encode: {rows} texts in {seconds:.1}s ({:.1} texts/s; model loaded in {:.2}s)",
        rows as f64 / seconds.max(1e-9),
        (loaded - started).as_secs_f64()
    );
    println!("{}", path.display());
    Ok(())
}
