//! `pool-encode encode`: stream records from the input through the worker pool and append the
//! rows, in input order, to the output. The output is written under `<output>.partial` and
//! renamed only when every record is in, so a failed or interrupted run never leaves a file that
//! looks complete. Progress goes to stderr while it runs, and a run report (JSON) next to the
//! output when it ends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pool_encode_encoder::model::{ModelFolder, ModelKind};
use pool_encode_encoder::{EncodeOptions, SparseEmbeddings};
use pool_encode_io::{
    DenseFormat, DenseWriter, InputOptions, InputReader, IoError, SparseJsonlWriter, partial_path,
};
use pool_encode_pool::{Pool, PoolConfig, PoolEncodeOptions};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::checkpoint::{self, Checkpoint};
use crate::progress;
use crate::report::{Outcome, RunReport, Status};
use crate::settings::EncodeSettings;

/// Where rows go: the writer for the model's kind, each under `<output>.partial`.
enum OutputWriter {
    Dense(DenseWriter),
    Sparse(SparseJsonlWriter),
}

impl OutputWriter {
    fn rows(&self) -> u64 {
        match self {
            OutputWriter::Dense(w) => w.rows(),
            OutputWriter::Sparse(w) => w.rows(),
        }
    }

    fn finish(self) -> Result<std::path::PathBuf> {
        Ok(match self {
            OutputWriter::Dense(w) => w.finish()?,
            OutputWriter::Sparse(w) => w.finish()?,
        })
    }
}

pub fn run(settings: &EncodeSettings) -> Result<()> {
    let output = &settings.output;
    // A hub id is downloaded once here; the workers load the local folder.
    let model = pool_encode_encoder::resolve_model(settings.model.as_ref())?;
    let kind = match settings.kind {
        Some(kind) => kind,
        None => ModelFolder::load(&model)?.kind(),
    };
    // The output's format: a dense matrix file, or (`None`) sparse JSON lines.
    let dense_format = match (kind, DenseFormat::from_path(output)) {
        (ModelKind::Dense, Some(format)) => Some(format),
        (ModelKind::Sparse, _) if output.extension().is_some_and(|e| e == "jsonl") => None,
        (ModelKind::Dense, None) => bail!(
            "{}: unsupported output format for a dense model (supported: .npy, .safetensors)",
            output.display()
        ),
        (ModelKind::Sparse, _) => bail!(
            "{}: unsupported output format for a sparse model (supported: .jsonl)",
            output.display()
        ),
    };
    if output.exists() && !settings.overwrite {
        bail!(
            "{}: output exists (pass --overwrite to replace it){}",
            output.display(),
            if settings.resume {
                "; the run it came from is complete"
            } else {
                ""
            }
        );
    }
    let fingerprint = fingerprint(settings, &model, kind);
    let resumed = match checkpoint::load(output)? {
        Some(saved) if settings.resume => {
            checkpoint::check_fingerprint(output, &saved.fingerprint, &fingerprint)?;
            Some(saved)
        }
        Some(saved) if !settings.overwrite => bail!(
            "{}: an interrupted run left {} rows in {}; pass --resume to continue it, or --overwrite to start over",
            checkpoint::path(output).display(),
            saved.rows,
            partial_path(output).display()
        ),
        _ => {
            checkpoint::remove(output)?;
            None
        }
    };
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
    // A resumed run skips the records whose rows are durable already.
    let done_rows = resumed.as_ref().map_or(0, |c| c.rows);
    for skipped in 0..done_rows {
        match reader.next() {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!(
                "{}: has {skipped} records, but the interrupted run had written {done_rows} rows: the input changed; --overwrite to start over",
                settings.input.display()
            ),
        }
    }

    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let mut config = PoolConfig::new(&model, settings.devices.clone());
    config.kind = kind;
    // This binary is its own worker (`pool-encode worker …`): one file to deploy.
    config.worker_command = Some((std::env::current_exe()?, vec!["worker".into()]));
    config.max_seq_length = settings.max_seq_length;
    config.precision = settings.precision;
    config.gpu_batches_in_flight = settings.gpu_batches_in_flight;
    let pool = Pool::start(config)?;
    let options = PoolEncodeOptions {
        encode: EncodeOptions {
            batch_size: settings.batch_size,
            max_batch_tokens: settings.max_batch_tokens,
            normalize_embeddings: settings.normalize,
            truncate_dim: settings.truncate_dim,
            prompt_name: settings.prompt_name.clone(),
            prompt: settings.prompt.clone(),
            max_active_dims: settings.max_active_dims,
        },
        chunk_size: Some(settings.chunk_size),
        ..Default::default()
    };
    let dim = options.encode.output_dimension(pool.embedding_dimension());
    let devices: Vec<String> = pool.devices().iter().map(ToString::to_string).collect();
    eprintln!(
        "pool-encode: {} ({dim} dims) on {} worker(s): {}",
        settings.model,
        devices.len(),
        devices.join(",")
    );
    let report = RunReport {
        settings,
        model_folder: model,
        kind,
        dimension: dim,
        resumed_rows: done_rows,
        started_at,
        started,
        ready: Instant::now(),
    };

    // A bad record ends the input there; the rows before it are still encoded and written.
    let position = reader.position();
    let bad_record: RefCell<Option<IoError>> = RefCell::new(None);
    // Ids of the records read and not yet written (sparse lines carry them), in input order.
    let ids: RefCell<VecDeque<String>> = RefCell::new(VecDeque::new());
    let texts = std::iter::from_fn(|| match reader.next()? {
        Ok(record) => {
            if kind == ModelKind::Sparse {
                ids.borrow_mut().push_back(record.id);
            }
            Some(record.text)
        }
        Err(e) => {
            *bad_record.borrow_mut() = Some(e);
            None
        }
    });
    let mut writer = match (dense_format, &resumed) {
        (Some(format), None) => OutputWriter::Dense(DenseWriter::create(output, format, dim)?),
        (Some(format), Some(c)) => {
            OutputWriter::Dense(DenseWriter::resume(output, format, dim, c.rows)?)
        }
        (None, None) => OutputWriter::Sparse(SparseJsonlWriter::create(output)?),
        (None, Some(c)) => {
            OutputWriter::Sparse(SparseJsonlWriter::resume(output, c.rows, c.bytes)?)
        }
    };
    if let Some(c) = &resumed {
        eprintln!(
            "pool-encode: resuming after row {} (checkpoint {})",
            c.rows,
            checkpoint::path(output).display()
        );
    }
    // Length-sorted windows of 8 chunks per worker: chunks pad little, memory stays flat. A
    // resumed run keeps the interrupted run's windows, so its chunks are the same.
    let window = resumed
        .as_ref()
        .map_or(settings.chunk_size * pool.workers() * 8, |c| c.window);
    // Ctrl-C / SIGTERM: stop the workers cleanly (they ignore SIGINT themselves) and keep what
    // was computed; the stream then ends with `PoolError::Stopped`.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let signals_handle = signals.handle();
    let interrupted = AtomicI32::new(0);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            if let Some(signal) = signals.forever().next() {
                interrupted.store(signal, Ordering::SeqCst);
                pool.stop();
            }
        });
        let (stop_progress, stopped) = std::sync::mpsc::channel();
        if let Some(interval) = settings.progress_interval {
            let sources = progress::Sources {
                pool: &pool,
                input: position,
                since: report.ready,
            };
            let terminal = std::io::stderr().is_terminal();
            scope.spawn(move || progress::report_until(sources, interval, terminal, stopped));
        }
        let result = (|| -> Result<()> {
            // After each window: its rows made durable, then the checkpoint that counts them.
            let save = |rows: u64, bytes: u64| {
                checkpoint::save(
                    output,
                    &Checkpoint {
                        rows,
                        bytes,
                        window,
                        fingerprint: fingerprint.clone(),
                    },
                )
            };
            match &mut writer {
                OutputWriter::Dense(writer) => {
                    for piece in pool.encode_stream_sorted(texts, &options, window) {
                        writer.write_rows(piece?.embeddings.as_slice())?;
                        writer.sync()?;
                        save(writer.rows(), writer.bytes())?;
                    }
                }
                OutputWriter::Sparse(writer) => {
                    let stream = pool
                        .encode_stream_sorted_rows::<SparseEmbeddings, _>(texts, &options, window);
                    for piece in stream {
                        for row in piece?.embeddings.iter() {
                            let id = ids.borrow_mut().pop_front().unwrap_or_default();
                            writer.write_row(&id, row.indices, row.values)?;
                        }
                        writer.sync()?;
                        save(writer.rows(), writer.bytes())?;
                    }
                }
            }
            Ok(())
        })();
        drop(stop_progress);
        signals_handle.close();
        result
    });
    let signal = interrupted.load(Ordering::SeqCst);
    let error = match (outcome, bad_record.into_inner()) {
        (Err(_), _) if signal != 0 => Some(format!("interrupted by signal {signal}")),
        (Err(e), _) => Some(format!("{e:#}")),
        (Ok(()), Some(e)) => Some(e.to_string()),
        (Ok(()), None) => None,
    };
    let rows = writer.rows();
    let (status, output_file) = match &error {
        None => {
            let finished = writer.finish()?;
            checkpoint::remove(output)?;
            (Status::Complete, finished)
        }
        Some(_) if signal != 0 => (Status::Interrupted, partial_path(output)),
        Some(_) => (Status::Failed, partial_path(output)),
    };
    let seconds = report.ready.elapsed().as_secs_f64();
    let report_file = report.finish(&Outcome {
        status,
        error: error.clone(),
        texts: rows,
        output_file: &output_file,
        workers: &pool.worker_stats(),
    })?;
    eprintln!(
        "pool-encode: {} texts in {seconds:.1}s ({:.1} texts/s; pool started in {:.2}s); report in {}",
        rows - done_rows,
        (rows - done_rows) as f64 / seconds.max(1e-9),
        (report.ready - started).as_secs_f64(),
        report_file.display()
    );
    match error {
        None => {
            println!("{}", output_file.display());
            Ok(())
        }
        Some(error) => {
            // Nothing computed is lost: the rows so far stay in the `.partial` file.
            let durable = checkpoint::load(output)
                .ok()
                .flatten()
                .map_or(0, |c| c.rows);
            let kept = format!(
                "{rows} embeddings computed before this error are in {} (the output was not completed); --resume continues after row {durable}",
                output_file.display()
            );
            if signal != 0 {
                eprintln!("error: {error}\n{kept}");
                std::process::exit(130);
            }
            bail!("{error}\n{kept}")
        }
    }
}

/// What the output's bytes depend on besides the input's records: a resumed run must match.
fn fingerprint(
    settings: &EncodeSettings,
    model: &std::path::Path,
    kind: ModelKind,
) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "kind": format!("{kind:?}"),
        "input": settings.input,
        "precision": settings.precision.to_string(),
        "batch_size": settings.batch_size,
        "max_batch_tokens": settings.max_batch_tokens,
        "chunk_size": settings.chunk_size,
        "max_seq_length": settings.max_seq_length,
        "text_field": settings.text_field,
        "id_field": settings.id_field,
        "normalize": settings.normalize,
        "truncate_dim": settings.truncate_dim,
        "max_active_dims": settings.max_active_dims,
        "prompt_name": settings.prompt_name,
        "prompt": settings.prompt,
    })
}
