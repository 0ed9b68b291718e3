//! `pool-encode encode`: stream records from the input through the worker pool and append the
//! rows, in input order, to the output. The output is written under `<output>.partial` and
//! renamed only when every record is in, so a failed or interrupted run never leaves a file that
//! looks complete.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pool_encode_encoder::EncodeOptions;
use pool_encode_io::{InputOptions, InputReader, IoError, NpyWriter, partial_path};
use pool_encode_pool::{Pool, PoolConfig, PoolEncodeOptions};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

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
    // A hub id is downloaded once here; the workers load the local folder.
    let model = pool_encode_encoder::resolve_model(settings.model.as_ref())?;
    let mut config = PoolConfig::new(model, settings.devices.clone());
    // This binary is its own worker (`pool-encode worker …`): one file to deploy.
    config.worker_command = Some((std::env::current_exe()?, vec!["worker".into()]));
    config.max_seq_length = settings.max_seq_length;
    config.precision = settings.precision;
    let pool = Pool::start(config)?;
    let options = PoolEncodeOptions {
        encode: EncodeOptions {
            batch_size: settings.batch_size,
            max_batch_tokens: settings.max_batch_tokens,
            normalize_embeddings: settings.normalize,
            truncate_dim: settings.truncate_dim,
            prompt_name: settings.prompt_name.clone(),
            prompt: settings.prompt.clone(),
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
    let ready = Instant::now();

    // A bad record ends the input there; the rows before it are still encoded and written.
    let bad_record: RefCell<Option<IoError>> = RefCell::new(None);
    let texts = std::iter::from_fn(|| match reader.next()? {
        Ok(record) => Some(record.text),
        Err(e) => {
            *bad_record.borrow_mut() = Some(e);
            None
        }
    });
    let mut writer = NpyWriter::create(output, dim)?;
    let kept = |writer: &NpyWriter| {
        format!(
            "{} embeddings computed before this error are in {} (the output was not completed)",
            writer.rows(),
            partial_path(output).display()
        )
    };
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
        let result = (|| -> Result<()> {
            // Length-sorted windows of 8 chunks per worker: chunks pad little, memory stays flat.
            let window = settings.chunk_size * pool.workers() * 8;
            for piece in pool.encode_stream_sorted(texts, &options, window) {
                match piece {
                    Ok(piece) => writer.write_rows(piece.embeddings.as_slice())?,
                    Err(e) => match interrupted.load(Ordering::SeqCst) {
                        0 => bail!("{e}\n{}", kept(&writer)),
                        signal => bail!("interrupted by signal {signal}\n{}", kept(&writer)),
                    },
                }
            }
            Ok(())
        })();
        signals_handle.close();
        result
    });
    if let Err(e) = outcome {
        if interrupted.load(Ordering::SeqCst) != 0 {
            eprintln!("error: {e:#}");
            std::process::exit(130);
        }
        return Err(e);
    }
    if let Some(e) = bad_record.into_inner() {
        bail!("{e}\n{}", kept(&writer));
    }
    let rows = writer.rows();
    let path = writer.finish()?;
    let seconds = ready.elapsed().as_secs_f64();
    eprintln!(
        "pool-encode: {rows} texts in {seconds:.1}s ({:.1} texts/s; pool started in {:.2}s)",
        rows as f64 / seconds.max(1e-9),
        (ready - started).as_secs_f64()
    );
    println!("{}", path.display());
    Ok(())
}
