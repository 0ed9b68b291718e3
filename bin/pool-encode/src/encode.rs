//! `pool-encode encode`: stream records from the input through the worker pool and append the
//! rows, in input order, to the output. The output is written under `<output>.partial` and
//! renamed only when every record is in, so a failed or interrupted run never leaves a file that
//! looks complete. Progress goes to stderr while it runs, and a run report (JSON) next to the
//! output when it ends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pool_encode_encoder::model::{ModelFolder, ModelKind};
use pool_encode_encoder::{EncodeOptions, Quantizer, SparseEmbeddings};
use pool_encode_io::{
    InputOptions, InputReader, IoError, OutputFormat, RejectsWriter, RowWriter, ShardManifest,
    ValueType, f32_bytes, partial_path,
};
use pool_encode_pool::{Pool, PoolConfig, PoolEncodeOptions};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::checkpoint::{self, Checkpoint};
use crate::progress;
use crate::report::{Outcome, RunReport, Status};
use crate::settings::EncodeSettings;
use serde_json::Value;

/// One record read and not yet written, in input order: what a checkpoint after its row needs.
struct Pending {
    /// The record's id, for formats that keep ids.
    id: Option<String>,
    /// Index from the run's first record (a shard's start).
    record: u64,
    /// The rejects file's (count, bytes) when this record was read: the records before it are
    /// all encoded or rejected.
    rejects: (u64, u64),
}

pub fn run(settings: &EncodeSettings) -> Result<()> {
    let output = &settings.output;
    // A hub id is downloaded once here; the workers load the local folder.
    let model = pool_encode_encoder::resolve_model(settings.model.as_ref())?;
    let kind = match settings.kind {
        Some(kind) => kind,
        None => ModelFolder::load(&model)?.kind(),
    };
    warn_about_remote_code(&model);
    let format = OutputFormat::for_output(output, kind)?;
    if let (Some(quantize), ModelKind::Sparse) = (settings.quantize, kind) {
        bail!("--quantize {quantize} applies to dense models; this model is sparse");
    }
    // Read before the pool starts, so that a bad file fails at once.
    let ranges = match &settings.calibration {
        Some(path) => Some(crate::quantize::float_file_ranges(path)?),
        None => None,
    };
    // A shard that completed (its manifest is written last) is done: running it again with
    // --resume, as a requeued scheduler task does, succeeds without work.
    let manifest = pool_encode_io::shard::manifest_path(output);
    if settings.resume
        && !settings.overwrite
        && settings.shard.is_some()
        && output.exists()
        && manifest.exists()
    {
        ShardManifest::load(&manifest)?;
        eprintln!(
            "pool-encode: {} is complete already ({})",
            output.display(),
            manifest.display()
        );
        println!("{}", output.display());
        return Ok(());
    }
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
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create folder", parent.display()))?;
    }
    let fingerprint = fingerprint(settings, &model, kind)?;
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
    // A manifest left by an earlier run of this shard no longer describes what will be there.
    match std::fs::remove_file(&manifest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("{}: cannot remove", manifest.display()));
        }
        _ => {}
    }
    let input_options = InputOptions {
        text_field: settings.text_field.clone(),
        id_field: settings.id_field.clone(),
        max_record_bytes: settings.max_record_bytes,
    };
    // The records this run covers: a shard's range of the whole input (counted first, without
    // parsing), else all of them.
    let (records, input_records) = match settings.shard {
        Some(shard) => {
            let total = InputReader::count_records(&settings.input, input_options.clone())?;
            eprintln!(
                "pool-encode: shard {shard}: records {}..{} of {total} → {}",
                shard.range(total).start,
                shard.range(total).end,
                output.display()
            );
            (shard.range(total), Some(total))
        }
        None => (0..u64::MAX, None),
    };
    let mut reader = InputReader::open(&settings.input, input_options)?;
    if reader.position().file_bytes == 0 {
        bail!(
            "{}: the input is empty (no records to encode)",
            settings.input.display()
        );
    }
    // A resumed run skips the records that are done already (encoded or rejected).
    let done = resumed.as_ref().map_or(0, |c| c.records);
    let skip = records.start + done;
    let skipped = reader.skip_records(skip)?;
    if skipped < skip {
        bail!(
            "{}: has {skipped} records, but this run starts after record {skip}: the input changed; --overwrite to start over",
            settings.input.display()
        );
    }
    let mut to_read = records.end - skip;

    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
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
    let mut config = PoolConfig::new(&model, settings.devices.clone());
    config.kind = kind;
    // This binary is its own worker (`pool-encode worker …`): one file to deploy.
    config.worker_command = Some((std::env::current_exe()?, vec!["worker".into()]));
    config.max_seq_length = settings.max_seq_length;
    config.precision = settings.precision;
    config.gpu_batches_in_flight = settings.gpu_batches_in_flight;
    config.planned_options = options.encode.clone();
    let pool = Pool::start(config)?;
    let dim = options.encode.output_dimension(pool.embedding_dimension());
    let quantizer = match settings.quantize {
        Some(quantize) => Some(Quantizer::new(quantize, dim, ranges.as_ref()).map_err(|e| {
            match &settings.calibration {
                Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
                None => e.into(),
            }
        })?),
        None => None,
    };
    // What a row of the output holds: `dim` floats, or the quantized row's bytes.
    let values = ValueType::of(settings.quantize);
    let stored_dim = quantizer.as_ref().map_or(dim, Quantizer::output_dim);
    let devices: Vec<String> = pool.devices().iter().map(ToString::to_string).collect();
    eprintln!(
        "pool-encode: {} ({dim} dims{}) on {} worker(s): {}",
        settings.model,
        match &quantizer {
            Some(q) => format!(
                ", {} quantized to {stored_dim} bytes a row",
                q.quantization()
            ),
            None => String::new(),
        },
        devices.len(),
        devices.join(",")
    );
    let report = RunReport {
        settings,
        model_folder: model,
        kind,
        dimension: dim,
        resumed_rows: resumed.as_ref().map_or(0, |c| c.rows),
        started_at,
        started,
        ready: Instant::now(),
    };

    // A bad record is set aside in the rejects file when there is one; otherwise it ends the
    // input there, and the rows before it are still encoded and written.
    let rejects_cell = RefCell::new(match (&settings.rejects, &resumed) {
        (None, _) => None,
        (Some(path), None) => Some(RejectsWriter::create(path)?),
        (Some(path), Some(c)) => Some(RejectsWriter::resume(path, c.rejected, c.rejects_bytes)?),
    });
    let position = reader.position();
    let stopped_by: RefCell<Option<IoError>> = RefCell::new(None);
    let pending: RefCell<VecDeque<Pending>> = RefCell::new(VecDeque::new());
    let texts = std::iter::from_fn(|| {
        while to_read > 0 {
            to_read -= 1;
            let record = reader.records_read() - records.start;
            let read = reader.next()?;
            let mut rejects = rejects_cell.borrow_mut();
            let error = match read {
                Ok(read) => {
                    pending.borrow_mut().push_back(Pending {
                        id: format.has_ids().then_some(read.id),
                        record,
                        rejects: rejects.as_ref().map_or((0, 0), RejectsWriter::state),
                    });
                    return Some(read.text);
                }
                Err(e @ IoError::Record { .. }) if rejects.is_some() => {
                    let writer = rejects.as_mut().expect("checked");
                    match writer.write(records.start + record, &e) {
                        Ok(()) => continue,
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            *stopped_by.borrow_mut() = Some(error);
            return None;
        }
        None
    })
    // Fused: once a bad record has ended the input, nothing after it is read.
    .fuse();
    let mut writer = match &resumed {
        None => RowWriter::create(output, format, stored_dim, values)?,
        Some(c) => RowWriter::resume(output, format, stored_dim, values, c.rows, c.bytes)?,
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
                total: input_records.map(|_| records.end - skip),
                skipped: skip,
            };
            let terminal = std::io::stderr().is_terminal();
            scope.spawn(move || progress::report_until(sources, interval, terminal, stopped));
        }
        let result = (|| -> Result<()> {
            // After each window: its rows (and the rejects before them) made durable, then the
            // checkpoint that counts them.
            let save_checkpoint = |writer: &mut RowWriter, rows: u64| -> Result<()> {
                let mut last = None;
                for _ in 0..rows {
                    last = pending.borrow_mut().pop_front();
                }
                let last = last.context("a window with no rows")?;
                writer.sync()?;
                if let Some(rejects) = rejects_cell.borrow_mut().as_mut() {
                    rejects.sync()?;
                }
                checkpoint::save(
                    output,
                    &Checkpoint {
                        records: last.record + 1,
                        rows: writer.rows(),
                        bytes: writer.bytes(),
                        rejected: last.rejects.0,
                        rejects_bytes: last.rejects.1,
                        window,
                        fingerprint: fingerprint.clone(),
                    },
                )
            };
            fn id(waiting: &Pending) -> &str {
                waiting.id.as_deref().unwrap_or_default()
            }
            match kind {
                ModelKind::Dense => {
                    let mut rows = Vec::new();
                    for piece in pool.encode_stream_sorted(texts, &options, window) {
                        let piece = piece?;
                        let queue = pending.borrow();
                        let embeddings = piece.embeddings.as_slice();
                        match &quantizer {
                            Some(quantizer) => {
                                rows.clear();
                                quantizer.quantize_into(embeddings, &mut rows);
                            }
                            None => rows = f32_bytes(embeddings),
                        }
                        writer.write_dense(&rows, |i| id(&queue[i]))?;
                        drop(queue);
                        save_checkpoint(&mut writer, piece.embeddings.rows() as u64)?;
                    }
                }
                ModelKind::Sparse => {
                    let stream = pool
                        .encode_stream_sorted_rows::<SparseEmbeddings, _>(texts, &options, window);
                    for piece in stream {
                        let piece = piece?;
                        let queue = pending.borrow();
                        for (row, waiting) in piece.embeddings.iter().zip(queue.iter()) {
                            writer.write_sparse(id(waiting), row.indices, row.values)?;
                        }
                        drop(queue);
                        save_checkpoint(&mut writer, piece.embeddings.rows() as u64)?;
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
    let error = match (outcome, stopped_by.into_inner()) {
        (Err(_), _) if signal != 0 => Some(format!("interrupted by signal {signal}")),
        (Err(e), _) => Some(format!("{e:#}")),
        (Ok(()), Some(e)) => Some(e.to_string()),
        (Ok(()), None) => None,
    };
    let rows = writer.rows();
    let rejects = rejects_cell.into_inner();
    let rejected = rejects.as_ref().map_or(0, |r| r.state().0);
    let (status, output_file) = match &error {
        None => {
            let finished = writer.finish()?;
            if let Some(rejects) = rejects {
                rejects.finish()?;
            }
            if let (Some(shard), Some(input_records)) = (settings.shard, input_records) {
                save_manifest(
                    &finished,
                    ShardManifest {
                        shard,
                        input_records,
                        records: records.clone(),
                        rows,
                        rejected,
                        format,
                        dimension: stored_dim,
                        values,
                        output: String::new(),
                        bytes: 0,
                        sha256: String::new(),
                        settings: fingerprint.clone(),
                    },
                )?;
                eprintln!(
                    "pool-encode: shard {shard} complete; once every shard is: pool-encode merge --output {}",
                    settings.merged_output.display()
                );
            }
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
        rejected,
        output_file: &output_file,
        workers: &pool.worker_stats(),
    })?;
    let new_rows = rows - resumed.as_ref().map_or(0, |c| c.rows);
    eprintln!(
        "pool-encode: {new_rows} texts in {seconds:.1}s ({:.1} texts/s; pool started in {:.2}s){}; report in {}",
        new_rows as f64 / seconds.max(1e-9),
        (report.ready - started).as_secs_f64(),
        match (&settings.rejects, rejected) {
            (Some(path), 1..) =>
                format!("; {rejected} bad records set aside in {}", path.display()),
            _ => String::new(),
        },
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
                .map_or(0, |c| records.start + c.records);
            let kept = format!(
                "{rows} embeddings computed before this error are in {} (the output was not completed); --resume continues after input record {durable}",
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

/// A checkpoint whose config.json maps `AutoModel` to modeling code of its own runs as
/// transformers' class for its model_type (as ST runs it without `trust_remote_code`): said on
/// stderr, since that code may compute otherwise (gte-Qwen2's attends both ways).
fn warn_about_remote_code(model: &Path) {
    let Ok(folder) = ModelFolder::load(model) else {
        return;
    };
    if let Ok(module) = folder.transformer()
        && let Some(class) = &module.remote_code
    {
        eprintln!(
            "pool-encode: warning: {} names modeling code of its own for AutoModel ({class}); \
             pool-encode runs transformers' own class for its model_type instead, as \
             sentence-transformers does without trust_remote_code, and the embeddings can \
             differ from that code's",
            module.dir.join("config.json").display()
        );
    }
}

/// A shard's manifest, with its finished output's name, size and checksum; shard-independent
/// settings only, so every shard of a run has the same.
fn save_manifest(output: &Path, mut manifest: ShardManifest) -> Result<()> {
    manifest.output = output
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    manifest.bytes = std::fs::metadata(output)
        .with_context(|| format!("{}: cannot read", output.display()))?
        .len();
    manifest.sha256 = pool_encode_io::shard::file_sha256(output)?;
    if let Some(settings) = manifest.settings.as_object_mut() {
        settings.remove("shard");
    }
    manifest.save(output)?;
    Ok(())
}

/// What the output's bytes depend on besides the input's records: a resumed run, and every
/// shard of one run, must have the same. The model and input are identified by content and
/// size, not by path, so a run can resume, or shards run, where they are mounted elsewhere.
fn fingerprint(settings: &EncodeSettings, model: &Path, kind: ModelKind) -> Result<Value> {
    let input_bytes = std::fs::metadata(&settings.input)
        .with_context(|| format!("{}: cannot read", settings.input.display()))?
        .len();
    Ok(serde_json::json!({
        "model": model_digest(model)?,
        "kind": format!("{kind:?}"),
        "input": {
            "name": settings.input.file_name().map(|n| n.to_string_lossy()),
            "bytes": input_bytes,
        },
        "shard": settings.shard.map(|s| s.to_string()),
        "rejects": settings.rejects.is_some(),
        "max_record_bytes": settings.max_record_bytes,
        "precision": settings.precision.to_string(),
        "batch_size": settings.batch_size,
        "max_batch_tokens": settings.max_batch_tokens,
        "chunk_size": settings.chunk_size,
        "max_seq_length": settings.max_seq_length,
        "text_field": settings.text_field,
        "id_field": settings.id_field,
        "normalize": settings.normalize,
        "truncate_dim": settings.truncate_dim,
        "quantize": settings.quantize.map(|q| q.name()),
        "calibration": settings
            .calibration
            .as_deref()
            .map(pool_encode_io::shard::file_sha256)
            .transpose()?,
        "max_active_dims": settings.max_active_dims,
        "prompt_name": settings.prompt_name,
        "prompt": settings.prompt,
    }))
}

/// SHA-256 over a model folder's files (names and contents; the folder and its module
/// subfolders), with files over 64 MiB (the weights) counted by name and size only, which keeps
/// it quick for large models.
fn model_digest(folder: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    let mut folders = vec![folder.to_path_buf()];
    while let Some(dir) = folders.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("{}: cannot read", dir.display()))?
        {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                if dir == folder {
                    folders.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let size = std::fs::metadata(&file)?.len();
        hasher.update(
            file.strip_prefix(folder)
                .unwrap_or(&file)
                .to_string_lossy()
                .as_bytes(),
        );
        hasher.update(size.to_le_bytes());
        if size <= 64 << 20 {
            hasher.update(
                std::fs::read(&file).with_context(|| format!("{}: cannot read", file.display()))?,
            );
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
