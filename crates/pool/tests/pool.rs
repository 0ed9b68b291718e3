//! The pool against sentence-transformers' reference outputs, and under failure: dead, crashing
//! and hanging workers, a stop in the middle of a call, a killed coordinator.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pool_encode_encoder::{Device, Embeddings, Precision};
use pool_encode_pool::{OnPoison, Pool, PoolConfig, PoolEncodeOptions, PoolError};
use pool_encode_tests::*;

const MODEL: &str = "bert-mean-normalize-old";
const CRASH: &str = "\u{2620}crash-marker";
const HANG: &str = "\u{231b}hang-marker";

fn config(workers: usize) -> PoolConfig {
    let mut config = PoolConfig::new(
        tiny_model_dir(MODEL),
        vec![Device::Cpu { threads: Some(1) }; workers],
    );
    config.worker_command = Some((env!("CARGO_BIN_EXE_pool-encode-worker").into(), Vec::new()));
    config.worker_env = vec![
        ("POOL_ENCODE_FAULT_CRASH".into(), CRASH.into()),
        ("POOL_ENCODE_FAULT_HANG".into(), HANG.into()),
    ];
    config
}

fn chunked(chunk_size: usize) -> PoolEncodeOptions {
    PoolEncodeOptions {
        chunk_size: Some(chunk_size),
        ..Default::default()
    }
}

/// The reference rows for texts given as indices into the reference texts.
fn expected_rows(indices: &[usize]) -> Embeddings {
    let all = reference(MODEL, "embeddings.npy");
    Embeddings::new(
        indices.iter().flat_map(|&i| all.row(i).to_vec()).collect(),
        indices.len(),
        all.dim(),
    )
}

/// Two workers on one GPU (`$POOL_ENCODE_GPU_TEST_DEVICE`, e.g. cuda:0 or wgpu:0, in a build
/// with that feature), each with 3 batches in flight; skipped when it is not set.
#[test]
fn gpu_workers_match_sentence_transformers() {
    let Ok(device) = std::env::var("POOL_ENCODE_GPU_TEST_DEVICE") else {
        eprintln!(
            "gpu_workers_match_sentence_transformers: skipped (POOL_ENCODE_GPU_TEST_DEVICE is not set)"
        );
        return;
    };
    let device: Device = device.parse().unwrap();
    let mut config = config(2);
    config.devices = vec![device; 2];
    // More batches in flight than the default, through the worker's arguments.
    config.gpu_batches_in_flight = Some(3);
    let pool = Pool::start(config).unwrap();
    assert_eq!(pool.devices(), &[device, device]);
    let out = pool.encode(&texts(), &chunked(16)).unwrap();
    assert_close_on(
        device,
        &format!("2 workers on {device}"),
        &out.embeddings,
        &reference(MODEL, "embeddings.npy"),
    );
}

/// f16 (and bf16 on CUDA) workers against ST's f32 output for all-MiniLM-L6-v2: a
/// half-precision forward pass keeps each embedding's direction (cosine), not every value to 1e-4.
#[test]
fn half_precision_workers_stay_close_to_f32() {
    let Ok(device) = std::env::var("POOL_ENCODE_GPU_TEST_DEVICE") else {
        eprintln!(
            "half_precision_workers_stay_close_to_f32: skipped (POOL_ENCODE_GPU_TEST_DEVICE is not set)"
        );
        return;
    };
    let device: Device = device.parse().unwrap();
    // lavapipe is slow: a dozen texts there, all 211 on a real GPU.
    let n = if std::env::var_os("POOL_ENCODE_GPU_TEST_ALL").is_some() {
        211
    } else {
        12
    };
    let texts = &texts()[..n];
    let all = reference("all-MiniLM-L6-v2", "embeddings.npy");
    let precisions: &[Precision] = match device {
        Device::Cuda(_) => &[Precision::F16, Precision::Bf16],
        _ => &[Precision::F16],
    };
    for &precision in precisions {
        let mut config = config(1);
        config.model = minilm_dir();
        config.devices = vec![device];
        config.precision = precision;
        let pool = Pool::start(config).unwrap();
        let out = pool.encode(texts, &chunked(64)).unwrap();
        let expected = Embeddings::new(all.as_slice()[..n * all.dim()].to_vec(), n, all.dim());
        let worst = worst_cosine(&out.embeddings, &expected);
        eprintln!("{precision} on {device}: worst cosine to ST f32 over {n} texts: {worst:.7}");
        let bound = if precision == Precision::Bf16 {
            0.999
        } else {
            0.9999
        };
        assert!(
            worst >= bound,
            "{precision}: worst cosine {worst} < {bound}"
        );
    }
}

/// A real out-of-memory on a CUDA GPU: 32,768 texts of all-MiniLM-L6-v2's 256 tokens in one
/// batch need a 51 GB feed-forward activation, more than cubecl allocates at once (a quarter of
/// an 80 GB GPU; the attention scores go in blocks that fit it, and cannot cause the failure).
/// The worker reports it and exits; the chunk comes back in smaller batches on a fresh worker,
/// and every row arrives. Only on `cuda:K` (lavapipe would try to take that memory from the
/// host).
#[test]
fn a_gpu_out_of_memory_is_retried_with_smaller_batches() {
    let device = match std::env::var("POOL_ENCODE_GPU_TEST_DEVICE").map(|d| d.parse::<Device>()) {
        Ok(Ok(device @ Device::Cuda(_))) => device,
        _ => {
            eprintln!(
                "a_gpu_out_of_memory_is_retried_with_smaller_batches: skipped (needs POOL_ENCODE_GPU_TEST_DEVICE=cuda:K)"
            );
            return;
        }
    };
    // 2,151 words: cut at 256 tokens.
    let long = texts().into_iter().max_by_key(String::len).unwrap();
    let texts = vec![long; 32_768];
    let mut config = config(1);
    config.model = minilm_dir();
    config.devices = vec![device];
    let pool = Pool::start(config).unwrap();
    let options = PoolEncodeOptions {
        chunk_size: Some(texts.len()),
        encode: pool_encode_encoder::EncodeOptions {
            batch_size: texts.len(),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = pool.encode(&texts, &options).unwrap();
    // One text throughout: every row, whichever batch it ended up in, is that text's embedding
    // on the CPU (a device that dropped work would return stale or zero rows).
    let cpu = pool_encode_encoder::SentenceEncoder::load(minilm_dir(), Device::default())
        .unwrap()
        .encode(&texts[..1], &Default::default())
        .unwrap();
    let expected = Embeddings::new(cpu.as_slice().repeat(texts.len()), texts.len(), cpu.dim());
    let worst = worst_cosine(&out.embeddings, &expected);
    assert!(worst >= 0.9999, "worst cosine to the CPU's row: {worst}");
}

#[test]
fn a_missing_gpu_fails_the_start_with_a_clear_error() {
    let mut config = config(1);
    config.devices = vec![Device::Cuda(99)];
    let error = Pool::start(config).err().expect("cuda:99 does not exist");
    assert!(
        error.to_string().contains("cuda:99 does not exist"),
        "unclear error: {error}"
    );
}

#[test]
fn outputs_match_sentence_transformers_for_worker_counts_and_chunk_sizes() {
    let texts = texts();
    let expected = reference(MODEL, "embeddings.npy");
    let tokens =
        pool_encode_encoder::SentenceEncoder::load(tiny_model_dir(MODEL), Device::default())
            .unwrap()
            .prepare(&texts, &Default::default())
            .unwrap()
            .tokens() as u64;
    for workers in [1, 2, 3] {
        let pool = Pool::start(config(workers)).unwrap();
        for chunk_size in [None, Some(1), Some(7), Some(64), Some(5000)] {
            let options = PoolEncodeOptions {
                chunk_size,
                ..Default::default()
            };
            let out = pool.encode(&texts, &options).unwrap();
            assert!(out.skipped.is_empty());
            assert_close(
                &format!("{workers} workers, chunk size {chunk_size:?}"),
                &out.embeddings,
                &expected,
            );
        }
        // Every text and token went through some worker, counted once per call.
        let stats = pool.worker_stats();
        assert_eq!(stats.len(), workers);
        assert_eq!(stats.iter().map(|w| w.texts).sum::<u64>(), 5 * 211);
        assert_eq!(stats.iter().map(|w| w.tokens).sum::<u64>(), 5 * tokens);
        assert!(stats.iter().all(|w| w.restarts == 0 && w.pid.is_some()));
    }
}

#[test]
fn empty_input_and_reuse_over_many_calls() {
    let texts = texts();
    let pool = Pool::start(config(2)).unwrap();
    let empty = pool.encode(&Vec::<String>::new(), &chunked(3)).unwrap();
    assert_eq!((empty.embeddings.rows(), empty.embeddings.dim()), (0, 32));
    for call in 0..25 {
        let start = (call * 13) % texts.len();
        let end = (start + 1 + call * 3).min(texts.len());
        let indices: Vec<usize> = (start..end).collect();
        let out = pool
            .encode(&texts[start..end], &chunked(1 + call % 4))
            .unwrap();
        assert_close(
            &format!("call {call}"),
            &out.embeddings,
            &expected_rows(&indices),
        );
    }
}

#[test]
fn two_threads_on_one_pool_get_their_own_rows() {
    let texts = texts();
    let pool = Pool::start(config(2)).unwrap();
    let evens: Vec<usize> = (0..texts.len()).step_by(2).collect();
    let odds: Vec<usize> = (1..texts.len()).step_by(2).collect();
    std::thread::scope(|scope| {
        for indices in [&evens, &odds] {
            let (pool, texts) = (&pool, &texts);
            scope.spawn(move || {
                let mine: Vec<&String> = indices.iter().map(|&i| &texts[i]).collect();
                for round in 0..3 {
                    let out = pool.encode(&mine, &chunked(5)).unwrap();
                    assert_close(
                        &format!("thread round {round}"),
                        &out.embeddings,
                        &expected_rows(indices),
                    );
                }
            });
        }
    });
}

#[test]
fn streaming_yields_rows_in_order_before_the_input_is_done() {
    let texts = texts();
    let pool = Pool::start(config(2)).unwrap();
    let options = PoolEncodeOptions {
        chunk_size: Some(10),
        chunks_ahead: Some(2),
        ..Default::default()
    };
    let mut next_row = 0;
    let mut all = Vec::new();
    // The input is an iterator the pool pulls from lazily.
    for piece in pool.encode_stream(texts.iter().cloned(), &options) {
        let piece = piece.unwrap();
        assert_eq!(piece.offset, next_row, "rows arrive in input order");
        next_row += piece.embeddings.rows();
        all.extend_from_slice(piece.embeddings.as_slice());
    }
    assert_close(
        "stream",
        &Embeddings::new(all, texts.len(), 32),
        &reference(MODEL, "embeddings.npy"),
    );
}

/// Sorted windows: every window comes out whole and in input order, rows equal to ST's, for
/// windows of one chunk, several chunks, and more than the input; poison and skipped rows are
/// reported at their input positions.
#[test]
fn sorted_windows_keep_input_order_and_positions() {
    let texts = texts();
    let pool = Pool::start(config(2)).unwrap();
    let options = chunked(10);
    for window in [1, 10, 35, 64, 1000] {
        let mut next_row = 0;
        let mut all = Vec::new();
        for piece in pool.encode_stream_sorted(texts.iter().cloned(), &options, window) {
            let piece = piece.unwrap();
            assert_eq!(
                piece.offset, next_row,
                "window {window}: rows in input order"
            );
            next_row += piece.embeddings.rows();
            all.extend_from_slice(piece.embeddings.as_slice());
        }
        assert_close(
            &format!("sorted windows of {window}"),
            &Embeddings::new(all, texts.len(), 32),
            &reference(MODEL, "embeddings.npy"),
        );
    }
    let mut poisoned = texts.clone();
    poisoned[123] = format!("{} {CRASH}", poisoned[123]);
    let error = pool
        .encode_stream_sorted(poisoned.iter().cloned(), &options, 40)
        .find_map(Result::err)
        .expect("the poison text fails the stream");
    assert!(
        matches!(error, PoolError::PoisonText { index: 123, .. }),
        "{error}"
    );
    let skip = PoolEncodeOptions {
        on_poison: OnPoison::Skip,
        ..options
    };
    let skipped: Vec<usize> = pool
        .encode_stream_sorted(poisoned.iter().cloned(), &skip, 40)
        .flat_map(|piece| piece.unwrap().skipped)
        .collect();
    assert_eq!(skipped, vec![123]);
}

#[test]
fn a_worker_killed_mid_call_is_replaced_and_every_row_still_arrives() {
    let texts: Vec<String> = texts().into_iter().cycle().take(211 * 4).collect();
    let indices: Vec<usize> = (0..texts.len()).map(|i| i % 211).collect();
    let pool = Pool::start(config(2)).unwrap();
    let before = pool.worker_pids();
    let options = PoolEncodeOptions {
        chunk_size: Some(20),
        ..Default::default()
    };
    let mut stream = pool.encode_stream(texts.iter().cloned(), &options);
    let mut all = stream.next().unwrap().unwrap().embeddings.into_vec();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for piece in stream {
        all.extend_from_slice(piece.unwrap().embeddings.as_slice());
    }
    assert_close(
        "after SIGKILL",
        &Embeddings::new(all, texts.len(), 32),
        &expected_rows(&indices),
    );
    let after = pool.worker_pids();
    assert_eq!(after.len(), 2, "the killed worker was respawned");
    assert!(!after.contains(&before[0]));
    let stats = pool.worker_stats();
    assert_eq!(stats[0].restarts, 1, "{stats:?}");
    assert_eq!(stats[1].restarts, 0, "{stats:?}");
    assert_eq!(
        stats.iter().map(|w| w.texts).sum::<u64>(),
        texts.len() as u64
    );
}

#[test]
fn a_text_that_crashes_workers_is_found_and_reported_or_skipped() {
    let mut texts = texts();
    texts[37] = format!("{} {CRASH}", texts[37]);
    let pool = Pool::start(config(2)).unwrap();
    let err = pool.encode(&texts, &chunked(16)).unwrap_err();
    assert!(
        matches!(err, PoolError::PoisonText { index: 37, .. }),
        "{err}"
    );

    let options = PoolEncodeOptions {
        chunk_size: Some(16),
        on_poison: OnPoison::Skip,
        ..Default::default()
    };
    let out = pool.encode(&texts, &options).unwrap();
    assert_eq!(out.skipped, vec![37]);
    assert!(out.embeddings.row(37).iter().all(|v| v.is_nan()));
    let rest: Vec<usize> = (0..texts.len()).filter(|&i| i != 37).collect();
    let ours = Embeddings::new(
        rest.iter()
            .flat_map(|&i| out.embeddings.row(i).to_vec())
            .collect(),
        rest.len(),
        32,
    );
    assert_close("rows other than the poison", &ours, &expected_rows(&rest));
    // The pool is still usable afterwards.
    assert_eq!(
        pool.encode(&texts[..5], &chunked(2))
            .unwrap()
            .embeddings
            .rows(),
        5
    );
}

/// A GPU that runs out of memory (simulated: the worker fails batches of more than 4 texts as
/// burn's CUDA backend does) gets the chunk again with halved batches until they fit; every
/// row still arrives. When one text per batch is too much, the call fails and names the row.
#[test]
fn running_out_of_device_memory_retries_with_smaller_batches() {
    let texts: Vec<String> = texts()[..60].to_vec();
    let mut config = config(2);
    config
        .worker_env
        .push(("POOL_ENCODE_FAULT_OOM_ABOVE_BATCH".into(), "4".into()));
    let pool = Pool::start(config).unwrap();
    let out = pool.encode(&texts, &chunked(20)).unwrap();
    let all: Vec<usize> = (0..texts.len()).collect();
    assert_close(
        "rows after halving batches 32 → 4",
        &out.embeddings,
        &expected_rows(&all),
    );
    drop(pool);

    let mut config = self::config(1);
    config
        .worker_env
        .push(("POOL_ENCODE_FAULT_OOM_ABOVE_BATCH".into(), "0".into()));
    let pool = Pool::start(config).unwrap();
    let err = pool
        .encode(&texts[..3], &chunked(3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ran out of memory encoding row 0 alone"),
        "{err}"
    );
}

#[test]
fn a_hanging_worker_is_killed_after_the_deadline() {
    let mut texts: Vec<String> = texts()[..40].to_vec();
    texts[9] = format!("{HANG} {}", texts[9]);
    let mut config = config(2);
    config.task_timeout = Duration::from_secs(2);
    let pool = Pool::start(config).unwrap();
    let options = PoolEncodeOptions {
        chunk_size: Some(4),
        on_poison: OnPoison::Skip,
        ..Default::default()
    };
    let started = Instant::now();
    let out = pool.encode(&texts, &options).unwrap();
    assert_eq!(out.skipped, vec![9]);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn stop_during_a_call_returns_an_error_to_that_call() {
    let texts: Vec<String> = texts().into_iter().cycle().take(211 * 10).collect();
    let pool = Pool::start(config(1)).unwrap();
    std::thread::scope(|scope| {
        let call = scope.spawn(|| pool.encode(&texts, &chunked(20)));
        std::thread::sleep(Duration::from_millis(300));
        pool.stop();
        let result = call.join().unwrap();
        assert!(
            matches!(result, Err(PoolError::Stopped)),
            "{:?}",
            result.map(|e| e.embeddings.rows())
        );
    });
    assert!(pool.worker_pids().is_empty());
    assert!(matches!(
        pool.encode(&texts[..3], &chunked(1)),
        Err(PoolError::Stopped)
    ));
}

/// A stop that lands while a stream has nothing in the pool (its results all answered, the
/// consumer busy writing them) ends the stream's next step with `Stopped`. The stream used to
/// submit its next chunk to a dispatcher that had stopped taking work, then wait for it
/// forever: the hang that stopped CI in `killed_or_interrupted_runs_resume_to_the_same_bytes`.
#[test]
fn a_stream_that_goes_on_after_a_stop_gets_stopped() {
    let mut config = config(1);
    // The stopping dispatcher waits this long for the hanging worker below: the window in
    // which a submit reaches a dispatcher that no longer reads it.
    config.stop_timeout = Duration::from_secs(3);
    // 'static, so the stream can run on a thread this test can give up on.
    let pool: &'static Pool = Box::leak(Box::new(Pool::start(config).unwrap()));
    let options = PoolEncodeOptions {
        chunk_size: Some(10),
        chunks_ahead: Some(1),
        ..Default::default()
    };
    let mut stream = pool.encode_stream(texts(), &options);
    // One chunk ahead: once it is yielded, nothing of the stream's is in the pool.
    stream.next().unwrap().unwrap();
    let hanging = std::thread::spawn(|| pool.encode(&[format!("{HANG} x")], &chunked(1)));
    std::thread::sleep(Duration::from_millis(300));
    let stopping = std::thread::spawn(|| pool.stop());
    std::thread::sleep(Duration::from_millis(300));
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(stream.next().map(|piece| piece.map(|_| ()))));
    let next = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the stream still waits 30 s after the pool stopped");
    assert!(matches!(next, Some(Err(PoolError::Stopped))), "{next:?}");
    stopping.join().unwrap();
    assert!(matches!(hanging.join().unwrap(), Err(PoolError::Stopped)));
}

#[test]
fn a_broken_model_fails_start_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(2);
    config.model = tmp.path().to_path_buf();
    let err = Pool::start(config).err().expect("start must fail");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn workers_that_crash_while_loading_fail_start_instead_of_respawning_forever() {
    let mut config = config(2);
    config
        .worker_env
        .push(("POOL_ENCODE_FAULT_CRASH_AT_START".into(), "1".into()));
    let started = Instant::now();
    let err = Pool::start(config).err().expect("start must fail");
    assert!(matches!(err, PoolError::Startup(_)), "{err}");
    assert!(
        err.to_string().contains("died 3 times while loading"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Run by `killing_the_coordinator_leaves_no_worker_behind` in a child process: a coordinator
/// that starts a pool, prints its worker pids and waits to be killed.
#[test]
#[ignore = "helper process for killing_the_coordinator_leaves_no_worker_behind"]
fn coordinator_child() {
    let pool = Pool::start(config(2)).unwrap();
    println!("pids {:?}", pool.worker_pids());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killing_the_coordinator_leaves_no_worker_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "coordinator_child", "--ignored", "--nocapture"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("pids "))
        .unwrap();
    let pids: Vec<i32> = line["pids ".len()..]
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.split(") ").nth(1).unwrap_or("").starts_with('Z'))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pids.iter().any(|&p| alive(p)),
        "workers {pids:?} outlived their coordinator"
    );
}

/// A SPLADE model through the pool: sparse rows in input order for any chunking, equal to ST's
/// `SparseEncoder`; `max_active_dims` per call; a poison text skipped as an empty row; and a
/// dense call on a sparse pool refused with a clear error.
#[test]
fn sparse_models_through_the_pool() {
    let texts = texts();
    for name in ["splade-bert-untied-sum-old", "splade-inference-free"] {
        let mut config = config(2);
        config.model = tiny_model_dir(name);
        config.kind = pool_encode_pool::ModelKind::Sparse;
        let pool = Pool::start(config).unwrap();
        let dim = pool.embedding_dimension();
        let expected = read_sparse_jsonl(&reference_dir(name).join("encode.jsonl"), dim);
        for chunk_size in [None, Some(7), Some(500)] {
            let out = pool
                .encode_sparse(&texts, &chunked_or_default(chunk_size))
                .unwrap();
            assert_sparse_close(
                &format!("{name}, chunk size {chunk_size:?}"),
                &out.embeddings,
                &expected,
                SPARSE_ZERO,
            );
        }
        let mut options = chunked(16);
        options.encode.max_active_dims = Some(8);
        let top8 = pool.encode_sparse(&texts, &options).unwrap();
        let expected8 =
            read_sparse_jsonl(&reference_dir(name).join("max_active_dims_8.jsonl"), dim);
        assert_sparse_close(
            &format!("{name}: top 8"),
            &top8.embeddings,
            &expected8,
            SPARSE_ZERO,
        );

        // Sorted windows stream sparse rows in input order too.
        let streamed: Vec<_> = pool
            .encode_stream_sorted_rows::<pool_encode_encoder::SparseEmbeddings, _>(
                texts.clone(),
                &chunked(9),
                40,
            )
            .collect::<Result<_, _>>()
            .unwrap();
        let mut all = pool_encode_encoder::SparseEmbeddings::new(dim);
        for piece in &streamed {
            all.extend(&piece.embeddings);
        }
        assert_sparse_close(
            &format!("{name}: sorted windows"),
            &all,
            &expected,
            SPARSE_ZERO,
        );

        let error = pool
            .encode(&texts[..3], &chunked(2))
            .unwrap_err()
            .to_string();
        assert!(error.contains("encode_sparse"), "{error}");
    }

    // A text that kills every worker: skipped as a row without entries.
    let mut config = config(2);
    config.model = tiny_model_dir("splade-bert-tied-max");
    config.kind = pool_encode_pool::ModelKind::Sparse;
    let pool = Pool::start(config).unwrap();
    let input = vec![
        "a text".to_string(),
        CRASH.to_string(),
        "another".to_string(),
    ];
    let out = pool
        .encode_sparse(
            &input,
            &PoolEncodeOptions {
                chunk_size: Some(1),
                on_poison: OnPoison::Skip,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.skipped, vec![1]);
    assert_eq!(out.embeddings.rows(), 3);
    assert!(out.embeddings.row(1).is_empty() && !out.embeddings.row(0).is_empty());
}

fn chunked_or_default(chunk_size: Option<usize>) -> PoolEncodeOptions {
    PoolEncodeOptions {
        chunk_size,
        ..Default::default()
    }
}
