//! The `pool-encode encode` command end to end: outputs against sentence-transformers'
//! references, config files and flags, and every error a user can cause.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pool_encode_encoder::{Embeddings, Quantization, QuantizationRanges, quantize_embeddings};
use pool_encode_io::ValueType;
use pool_encode_tests::*;

/// Runs the binary with `env` added to the environment (scheduler variables).
fn pool_encode_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_pool-encode"))
            .args(args)
            .envs(env.iter().copied()),
        RUN_LIMIT,
    )
}

fn pool_encode(args: &[&str]) -> Output {
    pool_encode_env(args, &[])
}

/// Runs a command that must succeed, returning its stdout.
fn ok_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = pool_encode_env(args, env);
    assert!(
        out.status.success(),
        "pool-encode {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ok(args: &[&str]) -> String {
    ok_env(args, &[])
}

/// Runs a command that must fail, returning its stderr.
fn fails_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = pool_encode_env(args, env);
    assert!(!out.status.success(), "pool-encode {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn fails(args: &[&str]) -> String {
    fails_env(args, &[])
}

fn read(path: &Path) -> Embeddings {
    pool_encode_io::read_embeddings(path).unwrap()
}

fn texts_jsonl() -> String {
    data_dir().join("texts.jsonl").display().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_reference_model_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let mut models: Vec<(String, PathBuf)> = TINY_MODELS
        .iter()
        .map(|m| (m.to_string(), tiny_model_dir(m)))
        .collect();
    models.push(("all-MiniLM-L6-v2".into(), minilm_dir()));
    for (name, dir) in models {
        let out = tmp.path().join(format!("{name}.npy"));
        // A small chunk size, so the run streams several chunks that do not divide the input.
        let printed = ok(&[
            "encode",
            "--model",
            s(&dir),
            "--input",
            &texts_jsonl(),
            "--output",
            s(&out),
            "--batch-size",
            "7",
            "--chunk-size",
            "50",
        ]);
        assert_eq!(
            printed.trim(),
            s(&out),
            "the command prints where the output went"
        );
        assert_close(
            &format!("{name} via pool-encode"),
            &read(&out),
            &reference(&name, "embeddings.npy"),
        );
    }
}

#[test]
fn max_seq_length_flag_with_three_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("e.npy");
    let model = tiny_model_dir("mpnet-mean-normalize-new");
    ok(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
        "--max-seq-length",
        "40",
        "--devices",
        "cpu:1,cpu:1,cpu:1",
        "--chunk-size",
        "7",
    ]);
    assert_close(
        "max_seq_length 40",
        &read(&out),
        &reference(
            "mpnet-mean-normalize-new",
            "embeddings_max_seq_length_40.npy",
        ),
    );
}

#[test]
fn normalize_flag_and_txt_compressed_inputs_and_text_field() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = texts();
    // Texts a .txt can hold: one line each, no NUL byte (rejected as binary input).
    let picked: Vec<usize> = (0..texts.len())
        .filter(|&i| !texts[i].contains(['\n', '\r', '\0']))
        .collect();
    let txt = tmp.path().join("in.txt");
    std::fs::write(
        &txt,
        picked
            .iter()
            .map(|&i| format!("{}\n", texts[i]))
            .collect::<String>(),
    )
    .unwrap();
    let jsonl = tmp.path().join("in.jsonl");
    std::fs::write(
        &jsonl,
        picked
            .iter()
            .map(|&i| format!("{}\n", serde_json::json!({"body": texts[i], "n": i})))
            .collect::<String>(),
    )
    .unwrap();
    let name = "bert-cls-dense-new"; // no Normalize module: --normalize changes the output
    let mut expected = reference(name, "embeddings.npy");
    expected = Embeddings::new(
        picked
            .iter()
            .flat_map(|&i| expected.row(i).to_vec())
            .collect(),
        picked.len(),
        expected.dim(),
    );
    expected.normalize();
    let model = tiny_model_dir(name);
    // The same files compressed: .txt.gz (two gzip members, as pigz writes) and .jsonl.zst.
    let txt_gz = tmp.path().join("in.txt.gz");
    let raw = std::fs::read(&txt).unwrap();
    let (first, second) = raw.split_at(raw.len() / 2);
    let members: Vec<u8> = [first, second]
        .iter()
        .flat_map(|part| {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(part).unwrap();
            gz.finish().unwrap()
        })
        .collect();
    std::fs::write(&txt_gz, members).unwrap();
    let jsonl_zst = tmp.path().join("in.jsonl.zst");
    let raw = std::fs::read(&jsonl).unwrap();
    std::fs::write(&jsonl_zst, zstd::encode_all(raw.as_slice(), 3).unwrap()).unwrap();
    let fields = || vec!["--text-field", "body", "--id-field", "n"];
    for (input, extra) in [
        (&txt, vec![]),
        (&jsonl, fields()),
        (&txt_gz, vec![]),
        (&jsonl_zst, fields()),
    ] {
        let out = tmp.path().join("out.npy");
        let mut args = vec![
            "encode",
            "--model",
            s(&model),
            "--input",
            s(input),
            "--output",
            s(&out),
            "--normalize",
            "--overwrite",
        ];
        args.extend(extra);
        ok(&args);
        assert_close(
            &format!("--normalize from {}", input.display()),
            &read(&out),
            &expected,
        );
    }
}

#[test]
fn config_file_with_flags_overriding_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("from-config.npy");
    let config = tmp.path().join("run.toml");
    let model = tiny_model_dir("distilbert-weightedmean-old");
    std::fs::write(
        &config,
        format!(
            "model = {:?}\ninput = {:?}\noutput = {:?}\nbatch-size = 8\nmax-seq-length = 40\ndevices = \"cpu:1\"\n",
            s(&model),
            texts_jsonl(),
            s(&out)
        ),
    )
    .unwrap();
    ok(&["encode", "--config", s(&config)]);
    assert_close(
        "config file",
        &read(&out),
        &reference(
            "distilbert-weightedmean-old",
            "embeddings_max_seq_length_40.npy",
        ),
    );
    // A flag wins over the config key.
    let out2 = tmp.path().join("flag.npy");
    ok(&[
        "encode",
        "--config",
        s(&config),
        "--output",
        s(&out2),
        "--max-seq-length",
        "100",
    ]);
    assert_close(
        "flag over config",
        &read(&out2),
        &reference("distilbert-weightedmean-old", "embeddings.npy"),
    );
}

#[test]
fn prompt_name_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.npy");
    ok(&[
        "encode",
        "--model",
        s(&tiny_model_dir("bert-prompts-new")),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
        "--prompt-name",
        "query",
    ]);
    assert_close(
        "--prompt-name query",
        &read(&out),
        &reference("bert-prompts-new", "encode_query.npy"),
    );
}

#[test]
fn bad_records_stop_the_run_with_file_line_and_field_and_keep_earlier_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir("bert-mean-normalize-old");
    // (file, content, expected message, good records before the bad one)
    let cases: [(&str, &[u8], &str, usize); 5] = [
        (
            "missing.jsonl",
            b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"title\": \"c\"}\n",
            "missing.jsonl:3: missing field \"text\"",
            2,
        ),
        (
            "number.jsonl",
            b"{\"text\": \"a\"}\n{\"text\": 5}\n",
            "number.jsonl:2: field \"text\" must be a string, found a number",
            1,
        ),
        (
            "broken.jsonl",
            b"{\"text\": \"a\"}\n{\"text\": \"b\"\n",
            "broken.jsonl:2: invalid JSON",
            1,
        ),
        (
            "utf8.txt",
            b"fine\nnot \xff utf-8\n",
            "utf8.txt:2: invalid UTF-8",
            1,
        ),
        (
            "nul.txt",
            b"fine\nalso fine\nnul\0byte\n",
            "nul.txt:3: NUL byte",
            2,
        ),
    ];
    for (name, content, message, good) in cases {
        let input = tmp.path().join(name);
        std::fs::write(&input, content).unwrap();
        let out = tmp.path().join(format!("{name}.npy"));
        let err = fails(&[
            "encode",
            "--model",
            s(&model),
            "--input",
            s(&input),
            "--output",
            s(&out),
        ]);
        assert!(err.contains(message), "{name}: {err}");
        assert!(
            !out.exists(),
            "{name}: a failed run must not leave a complete-looking output"
        );
        // The rows before the bad record are kept in the .partial file.
        let partial = pool_encode_io::partial_path(&out);
        assert!(
            err.contains(&format!(
                "embeddings computed before this error are in {}",
                partial.display()
            )),
            "{err}"
        );
        // 128-byte header, then `good` rows of 32 f32.
        assert_eq!(
            std::fs::read(&partial).unwrap().len(),
            128 + good * 32 * 4,
            "{name}: rows before the bad line"
        );
    }
}

fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A run says how it goes (plain progress lines when stderr is not a terminal) and leaves a
/// JSON report next to the output whose counts add up; a failed run's report says so.
#[test]
fn progress_lines_and_run_report() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir("bert-mean-normalize-old");
    let out = tmp.path().join("o.npy");
    // Many copies of the texts, in small chunks, so that the run lasts several intervals.
    let input = tmp.path().join("in.jsonl");
    let lines = std::fs::read_to_string(texts_jsonl()).unwrap();
    std::fs::write(&input, lines.repeat(20)).unwrap();
    let texts = 211 * 20;
    let run = pool_encode(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--devices",
        "cpu:1,cpu:1",
        "--chunk-size",
        "50",
        "--progress-interval",
        "0.01",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" texts/s, "))
        .collect();
    assert!(!progress.is_empty(), "no progress line in:\n{stderr}");
    assert!(
        progress
            .iter()
            .all(|l| l.contains("tokens/s") && l.contains("cpu:1 ")),
        "{progress:?}"
    );
    let report = read_report(&tmp.path().join("o.npy.report.json"));
    assert_eq!(report["status"], "complete");
    assert_eq!(report["texts"], texts);
    assert_eq!(report["dimension"], 32);
    assert_eq!(report["output"], s(&out));
    assert!(report["error"].is_null());
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let sum = |key: &str| {
        workers
            .iter()
            .map(|w| w[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("texts"), texts);
    assert_eq!(sum("tokens"), report["tokens"].as_u64().unwrap());
    assert!(report["tokens"].as_u64().unwrap() > texts);
    assert_eq!(report["settings"]["chunk_size"], 50);
    assert!(report["seconds"]["encoding"].as_f64().unwrap() > 0.0);

    // A bad record: the report says failed, names the error, and counts the rows kept.
    std::fs::write(&input, format!("{lines}{{\"title\": \"no text\"}}\n")).unwrap();
    let err = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--overwrite",
    ]);
    assert!(err.contains("report in"), "{err}");
    let report = read_report(&tmp.path().join("o.npy.report.json"));
    assert_eq!(report["status"], "failed");
    assert_eq!(report["texts"], 211);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("in.jsonl:212: missing field"),
        "{report}"
    );
    assert_eq!(report["output"], s(&pool_encode_io::partial_path(&out)));
}

#[test]
fn usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir("bert-mean-normalize-old");
    let out = tmp.path().join("o.npy");
    assert!(
        fails(&["encode", "--input", &texts_jsonl(), "--output", s(&out)])
            .contains("--model is required")
    );
    let err = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        "/nonexistent/in.jsonl",
        "--output",
        s(&out),
    ]);
    assert!(err.contains("/nonexistent/in.jsonl"), "{err}");
    let err = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&tmp.path().join("o.csv")),
    ]);
    assert!(err.contains("o.csv: unsupported output format"), "{err}");
    let err = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
        "--gpu-batches-in-flight",
        "0",
    ]);
    assert!(
        err.contains("--gpu-batches-in-flight must be at least 1"),
        "{err}"
    );
    let err = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
        "--progress-interval=-1",
    ]);
    assert!(err.contains("--progress-interval must be"), "{err}");
    let err = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
        "--devices",
        "tpu:0",
    ]);
    assert!(err.contains("unknown device \"tpu:0\""), "{err}");
    let err = fails(&[
        "encode",
        "--model",
        "/nonexistent/model",
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
    ]);
    assert!(err.contains("/nonexistent/model"), "{err}");
    let err = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
        "--batch-size",
        "0",
    ]);
    assert!(err.contains("--batch-size must be at least 1"), "{err}");

    std::fs::write(&out, b"precious").unwrap();
    let err = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
    ]);
    assert!(err.contains("output exists (pass --overwrite"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"precious",
        "an existing output is never overwritten without --overwrite"
    );

    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "model = \"m\"\nbatch_sise = 3\n").unwrap();
    let err = fails(&["encode", "--config", s(&config)]);
    assert!(
        err.contains("bad.toml") && err.contains("batch_sise"),
        "{err}"
    );
}

#[test]
fn empty_input_and_unwritable_output_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir("bert-mean-normalize-old");
    let input = tmp.path().join("empty.jsonl");
    std::fs::write(&input, b"").unwrap();
    let out = tmp.path().join("e.npy");
    let error = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--output",
        s(&out),
    ]);
    assert!(
        error.contains("empty.jsonl: the input is empty (no records to encode)"),
        "{error}"
    );
    assert!(!out.exists());
    // An output under a regular file cannot be created (whoever runs the test).
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("out.npy");
    let error = fails(&[
        "encode",
        "--model",
        s(&model),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
    ]);
    assert!(error.contains("a-file: cannot create folder"), "{error}");
}

/// Pids of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // Fields after the command (which may hold spaces) start after the last ')'.
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                rest.split(' ').nth(1) == Some(&parent.to_string())
            })
        })
        .collect()
}

#[test]
fn ctrl_c_stops_the_workers_and_keeps_the_rows_computed_so_far() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("many.jsonl");
    let lines: String = texts()
        .iter()
        .cycle()
        .take(211 * 6)
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let out = tmp.path().join("e.npy");
    let child = Command::new(env!("CARGO_BIN_EXE_pool-encode"))
        .args([
            "encode",
            "--model",
            s(&minilm_dir()),
            "--input",
            s(&input),
            "--output",
            s(&out),
        ])
        .args(["--devices", "cpu:1,cpu:1", "--chunk-size", "10"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let partial = pool_encode_io::partial_path(&out);
    // Wait until some rows are written, so there is something to keep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 128 + 10 * 384 * 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rows written within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let workers = children_of(child.id());
    assert_eq!(workers.len(), 2, "two worker processes");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = finish_within(child, RUN_LIMIT, "pool-encode after SIGINT");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted by signal 2"), "{stderr}");
    assert!(
        !out.exists(),
        "an interrupted run must not leave a complete-looking output"
    );
    let rows = (std::fs::metadata(&partial).unwrap().len() - 128) / (384 * 4);
    assert!((10..211 * 6).contains(&rows), "{rows} rows kept");
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} still running"
        );
    }
}

/// `--kind sparse`: SPLADE models to `.jsonl` lines with ids, in input order, equal to ST's
/// `SparseEncoder`; `--max-active-dims`; the kind read from the folder when not given; a
/// wrong output format for the kind refused.
#[test]
fn sparse_models_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    for name in SPARSE_MODELS {
        let out = tmp.path().join(format!("{name}.jsonl"));
        let dir = tiny_model_dir(name);
        let printed = ok(&[
            "encode",
            "--model",
            s(&dir),
            "--input",
            &texts_jsonl(),
            "--output",
            s(&out),
            "--kind",
            "sparse",
            "--devices",
            "cpu:1,cpu:1",
            "--chunk-size",
            "23",
        ]);
        assert_eq!(printed.trim(), s(&out));
        let dim = reference_meta(name)["embedding_dimension"]
            .as_u64()
            .unwrap() as usize;
        let expected = read_sparse_jsonl(&reference_dir(name).join("encode.jsonl"), dim);
        assert_sparse_close(name, &read_sparse_jsonl(&out, dim), &expected, SPARSE_ZERO);
        let ids: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids.len(), 211);
        assert_eq!((ids[0].as_str(), ids[210].as_str()), ("0", "210"));
    }

    // The kind comes from modules.json; ids from --id-field; the top 8 weights per row.
    let name = "splade-bert-untied-sum-old";
    let out = tmp.path().join("top8.jsonl");
    ok(&[
        "encode",
        "--model",
        s(&tiny_model_dir(name)),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&out),
        "--max-active-dims",
        "8",
        "--id-field",
        "id",
        "--devices",
        "cpu:1",
    ]);
    let expected = read_sparse_jsonl(&reference_dir(name).join("max_active_dims_8.jsonl"), 1500);
    assert_sparse_close(
        "top 8",
        &read_sparse_jsonl(&out, 1500),
        &expected,
        SPARSE_ZERO,
    );
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["id"], "t000");
    let report = read_report(&tmp.path().join("top8.jsonl.report.json"));
    assert_eq!(report["settings"]["kind"], "sparse");
    assert_eq!(report["settings"]["max_active_dims"], 8);
    assert_eq!(report["texts"], 211);

    let error = fails(&[
        "encode",
        "--model",
        s(&tiny_model_dir(name)),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&tmp.path().join("x.npy")),
    ]);
    assert!(
        error
            .contains("unsupported output format for a sparse model (supported: .jsonl, .parquet)"),
        "{error}"
    );
    let error = fails(&[
        "encode",
        "--model",
        s(&tiny_model_dir("bert-mean-normalize-old")),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&tmp.path().join("x.jsonl")),
    ]);
    assert!(
        error.contains("for a dense model (supported: .npy, .safetensors, .parquet)"),
        "{error}"
    );
    let error = fails(&[
        "encode",
        "--model",
        s(&tiny_model_dir("bert-mean-normalize-old")),
        "--input",
        &texts_jsonl(),
        "--output",
        s(&tmp.path().join("y.jsonl")),
        "--kind",
        "sparse",
        "--devices",
        "cpu:1",
    ]);
    assert!(error.contains("SentenceEncoder"), "{error}");
    let error = fails(&[
        "encode", "--kind", "splade", "--model", "m", "--input", "i", "--output", "o",
    ]);
    assert!(error.contains("--kind must be dense or sparse"), "{error}");
}

/// Runs `args` until its checkpoint counts at least `rows` rows, then sends `signal`; returns
/// the exit status. Fails if the run finished first (nothing would be left to resume).
fn interrupt_after(
    args: &[&str],
    output: &Path,
    rows: u64,
    signal: nix::sys::signal::Signal,
) -> std::process::ExitStatus {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pool-encode"))
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut name = output.file_name().unwrap().to_os_string();
    name.push(".checkpoint.json");
    let checkpoint = output.with_file_name(name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done = std::fs::read(&checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|c| c["rows"].as_u64())
            .unwrap_or(0);
        if done >= rows {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before row {rows}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = finish_within(
        child,
        RUN_LIMIT,
        &format!("pool-encode {args:?} after {signal}"),
    )
    .status;
    assert!(
        !output.exists(),
        "an interrupted run must not leave a complete-looking output"
    );
    status
}

/// A run killed (SIGKILL) or interrupted (SIGINT) mid-way and continued with `--resume` ends
/// with the same bytes as an uninterrupted run, dense and sparse; a leftover checkpoint is
/// never silently dropped, and a resume with other settings is refused.
#[test]
fn killed_or_interrupted_runs_resume_to_the_same_bytes() {
    use nix::sys::signal::Signal;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("many.jsonl");
    let lines: String = texts()
        .iter()
        .cycle()
        .take(211 * 40)
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(&input, lines).unwrap();
    for (model, extension, signal) in [
        ("bert-mean-normalize-old", "npy", Signal::SIGKILL),
        ("splade-bert-tied-max", "jsonl", Signal::SIGINT),
        ("distilbert-lowercase-old", "safetensors", Signal::SIGTERM),
    ] {
        let run = |output: &Path, extra: &[&str]| -> Vec<String> {
            let mut args: Vec<String> = [
                "encode",
                "--model",
                s(&tiny_model_dir(model)),
                "--input",
                s(&input),
                "--output",
                s(output),
                "--devices",
                "cpu:1",
                "--chunk-size",
                "16",
                "--progress-interval",
                "0",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            args.extend(extra.iter().map(|a| a.to_string()));
            args
        };
        let whole = tmp.path().join(format!("whole-{model}.{extension}"));
        let args = run(&whole, &[]);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

        let resumed = tmp.path().join(format!("resumed-{model}.{extension}"));
        let args = run(&resumed, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let status = interrupt_after(&args, &resumed, 1000, signal);
        assert!(!status.success());
        // Without --resume the leftover run is not thrown away.
        let error = fails(&args);
        assert!(error.contains("pass --resume to continue it"), "{error}");
        // Other settings: refused, naming the one that differs.
        let other = run(&resumed, &["--resume", "--batch-size", "8"]);
        let error = fails(&other.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(error.contains("batch_size is 8 now but 32"), "{error}");

        let with_resume = run(&resumed, &["--resume"]);
        let with_resume: Vec<&str> = with_resume.iter().map(String::as_str).collect();
        // Killed twice: a second interruption resumes from its own later checkpoint.
        interrupt_after(&with_resume, &resumed, 4000, Signal::SIGKILL);
        ok(&with_resume);
        assert_eq!(
            std::fs::read(&whole).unwrap(),
            std::fs::read(&resumed).unwrap(),
            "{model}: the resumed output differs from an uninterrupted run's"
        );
        let report = read_report(&resumed.with_extension(format!("{extension}.report.json")));
        assert_eq!(report["status"], "complete");
        assert_eq!(report["texts"], 211 * 40);
        assert!(report["resumed_after_row"].as_u64().unwrap() >= 4000);
        // Done: no checkpoint left, and resuming a complete run says so.
        assert!(
            !tmp.path()
                .join(format!("resumed-{model}.{extension}.checkpoint.json"))
                .exists()
        );
        let error = fails(&with_resume);
        assert!(
            error.contains("the run it came from is complete"),
            "{error}"
        );
    }
}

/// `.safetensors` output: one F32 tensor `embeddings` [N, dim], the same rows as `.npy`.
#[test]
fn safetensors_output_holds_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir("bert-cls-dense-new");
    let mut outputs = Vec::new();
    for extension in ["npy", "safetensors"] {
        let out = tmp.path().join(format!("e.{extension}"));
        ok(&[
            "encode",
            "--model",
            s(&model),
            "--input",
            &texts_jsonl(),
            "--output",
            s(&out),
            "--devices",
            "cpu:1,cpu:1",
            "--chunk-size",
            "30",
        ]);
        outputs.push(pool_encode_io::load_embeddings(&out).unwrap().0);
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_close(
        "safetensors output",
        &outputs[1],
        &reference("bert-cls-dense-new", "embeddings.npy"),
    );
}

/// `n` records cycling through the reference texts, one JSON object a line.
fn many_texts_jsonl(path: &Path, n: usize) {
    let lines: String = texts()
        .iter()
        .cycle()
        .take(n)
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(path, lines).unwrap();
}

/// `encode` arguments for one CPU worker, small chunks and no progress lines, plus `extra`.
fn encode_args(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Vec<String> {
    let base = [
        "encode",
        "--model",
        s(model),
        "--input",
        s(input),
        "--output",
        s(output),
        "--devices",
        "cpu:1",
        "--chunk-size",
        "16",
        "--progress-interval",
        "0",
    ];
    base.iter().chain(extra).map(|a| a.to_string()).collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// CPU workers whose batches the memory may not hold are warned about, whether the devices are
/// the caller's or the default plan (which cannot go below one worker); the run itself goes on.
#[test]
fn cpu_workers_too_large_for_the_memory_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir("bert-mean-normalize-old");
    let out = tmp.path().join("e.npy");
    let warning = "warning: the CPU workers may need up to";
    // No CUDA GPU is visible to the workers, so the default devices are CPU workers.
    let run = |args: Vec<String>| {
        let output = pool_encode_env(&strs(&args), &[("CUDA_VISIBLE_DEVICES", "")]);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stderr).unwrap()
    };
    let one_cpu_worker =
        |extra: &[&str]| encode_args(&model, Path::new(&texts_jsonl()), &out, extra);
    let fits = run(one_cpu_worker(&["--overwrite"]));
    assert!(!fits.contains(warning), "{fits}");
    // Batches of a hundred million texts: far more than any machine holds.
    let huge = ["--overwrite", "--batch-size", "100000000"];
    let explicit = run(one_cpu_worker(&huge));
    assert!(explicit.contains(warning), "{explicit}");
    assert!(explicit.contains("a smaller batch size or --max-batch-tokens"));
    let default_devices: Vec<String> = one_cpu_worker(&huge)
        .into_iter()
        .filter(|a| a != "--devices" && a != "cpu:1")
        .collect();
    let default = run(default_devices);
    assert!(default.contains(warning), "{default}");
    assert_eq!(read(&out).rows(), texts().len());
}

/// A checkpoint whose config.json maps AutoModel to its own modeling code runs as the native
/// class, and the command says so.
#[test]
fn remote_code_in_the_config_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&tiny_model_dir("qwen2-lasttoken-sliding-new"), &model);
    let out = tmp.path().join("e.npy");
    let warning = "names modeling code of its own for AutoModel (modeling_qwen.Qwen2Model)";
    let run = || {
        let output = pool_encode(&strs(&encode_args(
            &model,
            Path::new(&texts_jsonl()),
            &out,
            &["--overwrite"],
        )));
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stderr).unwrap()
    };
    assert!(!run().contains("modeling code"));
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["auto_map"] = serde_json::json!({"AutoModel": "modeling_qwen.Qwen2Model"});
    std::fs::write(&path, config.to_string()).unwrap();
    let stderr = run();
    assert!(stderr.contains(warning), "{stderr}");
    assert_close(
        "with auto_map",
        &read(&out),
        &reference("qwen2-lasttoken-sliding-new", "embeddings.npy"),
    );
}

/// Three shards run as separate processes, one killed mid-way and resumed, merged: the rows of
/// a single run. Merge refuses missing, unfinished, damaged or mismatched shards.
#[test]
fn shards_killed_resumed_and_merged_equal_a_single_run() {
    use nix::sys::signal::Signal;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("many.jsonl");
    many_texts_jsonl(&input, 211 * 20);
    let model = tiny_model_dir("bert-mean-normalize-old");
    let single = tmp.path().join("single.npy");
    ok(&strs(&encode_args(&model, &input, &single, &[])));

    let merged = tmp.path().join("out").join("merged.npy");
    let shard_args = |i: usize, extra: &[&str]| {
        let spec = format!("{i}/3");
        let mut extra: Vec<&str> = extra.to_vec();
        extra.extend(["--shard", &spec]);
        encode_args(&model, &input, &merged, &extra)
    };
    let shard_output = |i: usize| tmp.path().join(format!("out/merged-0000{i}-of-00003.npy"));
    let error = fails(&["merge", "--output", s(&merged)]);
    assert!(error.contains("no shard manifests found"), "{error}");
    // Shards 0 and 2 run alongside shard 1, which is killed and then resumed.
    let others: Vec<std::process::Child> = [0, 2]
        .iter()
        .map(|&i| {
            Command::new(env!("CARGO_BIN_EXE_pool-encode"))
                .args(shard_args(i, &[]))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    interrupt_after(
        &strs(&shard_args(1, &[])),
        &shard_output(1),
        300,
        Signal::SIGKILL,
    );
    for child in others {
        let status = finish_within(child, RUN_LIMIT, "a shard run beside the killed one").status;
        assert!(status.success());
    }
    let error = fails(&["merge", "--output", s(&merged)]);
    assert!(
        error.contains("shard 1/3 is not finished") && error.contains("--resume"),
        "{error}"
    );
    ok(&strs(&shard_args(1, &["--resume"])));
    let printed = ok(&["merge", "--output", s(&merged)]);
    assert_eq!(printed.trim(), s(&merged));
    // A requeued task of a complete shard succeeds without work.
    let again = ok(&strs(&shard_args(1, &["--resume"])));
    assert_eq!(again.trim(), s(&shard_output(1)));

    // The merged file is a single run's: same shape, and rows equal to float rounding (the
    // shards cut the input into other length-sorted windows, so batches differ).
    let (whole, pieces) = (read(&single), read(&merged));
    assert_eq!((pieces.rows(), pieces.dim()), (whole.rows(), whole.dim()));
    assert_close("merged shards vs a single run", &pieces, &whole);
    let error = fails(&["merge", "--output", s(&merged)]);
    assert!(error.contains("--overwrite"), "{error}");

    // A damaged shard is caught by its checksum; the merged output is not replaced by a bad one.
    let damaged = shard_output(2);
    let good = std::fs::read(&damaged).unwrap();
    let mut bytes = good.clone();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&damaged, &bytes).unwrap();
    let error = fails(&["merge", "--output", s(&merged), "--overwrite"]);
    assert!(
        error.contains("SHA-256") && error.contains("00002-of-00003"),
        "{error}"
    );
    std::fs::write(&damaged, &good).unwrap();

    // A shard from a run with other settings is refused, naming the setting.
    let manifest = tmp
        .path()
        .join("out/merged-00001-of-00003.npy.manifest.json");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["settings"]["batch_size"] = 8.into();
    std::fs::write(&manifest, edited.to_string()).unwrap();
    let error = fails(&["merge", "--output", s(&merged), "--overwrite"]);
    assert!(
        error.contains("batch_size") && error.contains("different runs"),
        "{error}"
    );
    std::fs::write(&manifest, original).unwrap();
    ok(&["merge", "--output", s(&merged), "--overwrite"]);
    assert_close("merged again", &read(&merged), &whole);
}

/// Sparse shards merge into the same lines (global record ids included) as a single run, and
/// `--shard auto` takes the shard from a Slurm array's or a Kubernetes Indexed Job's variables.
#[test]
fn sparse_shards_from_scheduler_variables_merge_to_a_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = PathBuf::from(texts_jsonl());
    let model = tiny_model_dir("splade-bert-tied-max");
    let single = tmp.path().join("single.jsonl");
    ok(&strs(&encode_args(&model, &input, &single, &[])));
    let merged = tmp.path().join("sparse.jsonl");
    let args = encode_args(&model, &input, &merged, &["--shard", "auto"]);
    for (index, task) in [(0, "1"), (1, "2")] {
        ok_env(
            &strs(&args),
            &[
                ("SLURM_ARRAY_TASK_ID", task),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
        );
        assert!(
            tmp.path()
                .join(format!("sparse-0000{index}-of-00002.jsonl.manifest.json"))
                .exists()
        );
    }
    ok(&["merge", "--output", s(&merged)]);
    let lines = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (whole, pieces) = (lines(&single), lines(&merged));
    assert_eq!(whole.len(), 211);
    for (a, b) in whole.iter().zip(&pieces) {
        assert_eq!(a["id"], b["id"]);
        assert_eq!(a["indices"], b["indices"], "row {}", a["id"]);
        let (va, vb) = (
            a["values"].as_array().unwrap(),
            b["values"].as_array().unwrap(),
        );
        for (x, y) in va.iter().zip(vb) {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5);
        }
    }

    // Kubernetes gives the index only: the count must come with it.
    let error = fails_env(&strs(&args), &[("JOB_COMPLETION_INDEX", "1")]);
    assert!(error.contains("auto/N"), "{error}");
    let k8s = encode_args(&model, &input, &merged, &["--shard", "auto/4"]);
    ok_env(&strs(&k8s), &[("JOB_COMPLETION_INDEX", "3")]);
    assert_eq!(
        lines(&tmp.path().join("sparse-00003-of-00004.jsonl")).len(),
        211 - 158
    );
}

/// With `--rejects`, bad records are set aside (file, line, error) and the run goes on; the
/// rows are those of the good records alone, and a killed run resumes to the same bytes, rejects
/// file included.
#[test]
fn rejects_file_sets_bad_records_aside_and_resumes() {
    use nix::sys::signal::Signal;
    let tmp = tempfile::tempdir().unwrap();
    let bad: [&[u8]; 5] = [
        b"{\"text\": 5}",
        b"{\"title\": \"no text\"}",
        b"{\"text\": \"broken\"",
        b"{\"text\": \"bad \xff utf-8\"}",
        b"{\"text\": \"nul\0\"}",
    ];
    let (mut mixed, mut clean) = (Vec::new(), Vec::new());
    let mut expected = Vec::new();
    let (mut line, mut record) = (0u64, 0u64);
    for (i, text) in texts().iter().cycle().take(211 * 12).enumerate() {
        if i % 97 == 5 {
            line += 1;
            mixed.extend_from_slice(bad[i % 5]);
            mixed.push(b'\n');
            expected.push((record, line));
            record += 1;
        }
        let good = format!("{}\n", serde_json::json!({ "text": text }));
        mixed.extend_from_slice(good.as_bytes());
        clean.extend_from_slice(good.as_bytes());
        line += 1;
        record += 1;
    }
    let (mixed_path, clean_path) = (
        tmp.path().join("mixed.jsonl"),
        tmp.path().join("clean.jsonl"),
    );
    std::fs::write(&mixed_path, mixed).unwrap();
    std::fs::write(&clean_path, clean).unwrap();
    let model = tiny_model_dir("bert-mean-normalize-old");
    let clean_out = tmp.path().join("clean.npy");
    ok(&strs(&encode_args(&model, &clean_path, &clean_out, &[])));

    let run = |name: &str| {
        let rejects = tmp.path().join(format!("{name}.rejects.jsonl"));
        let output = tmp.path().join(format!("{name}.npy"));
        let args = encode_args(&model, &mixed_path, &output, &["--rejects", s(&rejects)]);
        (output, rejects, args)
    };
    let (output, rejects, args) = run("whole");
    ok(&strs(&args));
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&clean_out).unwrap()
    );
    let set_aside: Vec<serde_json::Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(set_aside.len(), expected.len());
    for (reject, (record, line)) in set_aside.iter().zip(&expected) {
        assert_eq!(
            (reject["record"].as_u64(), reject["line"].as_u64()),
            (Some(*record), Some(*line))
        );
        let error = reject["error"].as_str().unwrap();
        assert!(error.contains(&format!("mixed.jsonl:{line}:")), "{error}");
    }
    let report = read_report(&tmp.path().join("whole.npy.report.json"));
    assert_eq!(report["rejected"], expected.len());
    assert_eq!(report["texts"], 211 * 12);

    let (output2, rejects2, args2) = run("resumed");
    interrupt_after(&strs(&args2), &output2, 800, Signal::SIGKILL);
    assert!(
        !rejects2.exists(),
        "rejects stay .partial until the run completes"
    );
    let mut resume = args2.clone();
    resume.push("--resume".into());
    interrupt_after(&strs(&resume), &output2, 1800, Signal::SIGKILL);
    ok(&strs(&resume));
    assert_eq!(
        std::fs::read(&output2).unwrap(),
        std::fs::read(&output).unwrap()
    );
    assert_eq!(
        std::fs::read(&rejects2).unwrap(),
        std::fs::read(&rejects).unwrap()
    );
}

/// A Parquet input with the texts in `body` (one null at row `null_row`) and integer ids in `key`.
fn write_parquet_texts(path: &Path, texts: &[String], null_row: Option<usize>) {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let body: StringArray = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (Some(i) != null_row).then_some(t.as_str()))
        .collect();
    let key = Int64Array::from_iter_values((0..texts.len() as i64).map(|i| 1000 + i));
    let batch = RecordBatch::try_from_iter([
        ("body", Arc::new(body) as ArrayRef),
        ("key", Arc::new(key) as ArrayRef),
    ])
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    // Small row groups, so a reader crosses several.
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(50))
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Parquet in (text and id columns, a null text, a missing or wrong column) and out (dense
/// `id` + `embedding`, sparse `id` + `indices` + `values`), resumed and sharded like the others.
#[test]
fn parquet_input_and_outputs() {
    use nix::sys::signal::Signal;
    let tmp = tempfile::tempdir().unwrap();
    let texts = texts();
    let input = tmp.path().join("texts.parquet");
    write_parquet_texts(&input, &texts, None);
    let fields = ["--text-field", "body", "--id-field", "key"];
    let dense = tiny_model_dir("bert-mean-normalize-old");

    // Dense: .parquet rows = .npy rows, ids from the key column, both = the reference.
    let (npy, parquet) = (tmp.path().join("d.npy"), tmp.path().join("d.parquet"));
    ok(&strs(&encode_args(&dense, &input, &npy, &fields)));
    ok(&strs(&encode_args(&dense, &input, &parquet, &fields)));
    let ids = pool_encode_io::read_dense(&parquet).unwrap().ids;
    let expected_ids: Vec<String> = (0..texts.len()).map(|i| (1000 + i).to_string()).collect();
    assert_eq!(ids, Some(expected_ids));
    let rows = read(&parquet);
    assert_eq!(rows, read(&npy));
    assert_close(
        "parquet in and out",
        &rows,
        &reference("bert-mean-normalize-old", "embeddings.npy"),
    );

    // Sparse: .parquet rows = .jsonl lines.
    let splade = tiny_model_dir("splade-bert-tied-max");
    let (jsonl, sparse) = (tmp.path().join("s.jsonl"), tmp.path().join("s.parquet"));
    ok(&strs(&encode_args(&splade, &input, &jsonl, &fields)));
    ok(&strs(&encode_args(&splade, &input, &sparse, &fields)));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let table = pool_encode_io::parquet::read_sparse_parquet(&sparse).unwrap();
    assert_eq!(table.len(), lines.len());
    for ((id, indices, values), line) in table.iter().zip(&lines) {
        assert_eq!(line["id"], id.as_str());
        assert_eq!(line["indices"], serde_json::json!(indices));
        let written: Vec<f32> = line["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(&written, values);
    }

    // Errors name the file, the row and the column.
    let nulls = tmp.path().join("nulls.parquet");
    write_parquet_texts(&nulls, &texts, Some(120));
    let out = tmp.path().join("n.npy");
    let error = fails(&strs(&encode_args(&dense, &nulls, &out, &fields)));
    assert!(
        error.contains("nulls.parquet:121: field \"body\" is null"),
        "{error}"
    );
    // Nothing after the bad record was read: the 120 rows before it are kept.
    assert!(
        error.contains("120 embeddings computed before this error"),
        "{error}"
    );
    std::fs::remove_file(tmp.path().join("n.npy.checkpoint.json")).unwrap();
    let rejects = tmp.path().join("n.rejects.jsonl");
    let mut with_rejects = fields.to_vec();
    with_rejects.extend(["--rejects", s(&rejects)]);
    ok(&strs(&encode_args(&dense, &nulls, &out, &with_rejects)));
    assert_eq!(read(&out).rows(), texts.len() - 1);
    assert!(
        std::fs::read_to_string(&rejects)
            .unwrap()
            .contains("\"record\":120")
    );
    let e = tmp.path().join("e.npy");
    let error = fails(&strs(&encode_args(
        &dense,
        &input,
        &e,
        &["--text-field", "title"],
    )));
    assert!(
        error.contains("texts.parquet: has no column \"title\" (its columns: body, key)"),
        "{error}"
    );
    let error = fails(&strs(&encode_args(
        &dense,
        &input,
        &e,
        &["--text-field", "key"],
    )));
    assert!(
        error.contains("column \"key\" must hold strings, not Int64"),
        "{error}"
    );

    // A killed run with Parquet output resumes to the same bytes; shards merge to its rows.
    let many = tmp.path().join("many.jsonl");
    many_texts_jsonl(&many, 211 * 20);
    let whole = tmp.path().join("whole.parquet");
    ok(&strs(&encode_args(&dense, &many, &whole, &[])));
    let resumed = tmp.path().join("resumed.parquet");
    let args = encode_args(&dense, &many, &resumed, &[]);
    interrupt_after(&strs(&args), &resumed, 1000, Signal::SIGKILL);
    let mut resume = args.clone();
    resume.push("--resume".into());
    ok(&strs(&resume));
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&resumed).unwrap()
    );
    let merged = tmp.path().join("merged.parquet");
    for shard in ["0/2", "1/2"] {
        ok(&strs(&encode_args(
            &dense,
            &many,
            &merged,
            &["--shard", shard],
        )));
    }
    ok(&["merge", "--output", s(&merged)]);
    let ids = |path: &Path| pool_encode_io::read_dense(path).unwrap().ids;
    assert_eq!(ids(&merged), ids(&whole));
    assert_eq!(read(&merged).rows(), 211 * 20);
    assert_close("merged parquet shards", &read(&merged), &read(&whole));
}

/// A dense output's values, whatever its format: `(bytes, type, rows, bytes a row)`; a Parquet
/// output's ids must be the rows' input lines (from 0).
fn read_dense_values(path: &Path) -> (Vec<u8>, ValueType, usize, usize) {
    let read = pool_encode_io::read_dense(path).unwrap();
    if let Some(ids) = &read.ids {
        let expected: Vec<String> = (0..read.rows).map(|i| i.to_string()).collect();
        assert_eq!(ids, &expected, "{}: ids", path.display());
    }
    (read.bytes, read.values, read.rows, read.dim)
}

/// `--quantize` in every dense format against ST's `quantize_embeddings` of ST's float rows
/// (what its `encode(precision=…)` returns: generate_quantized.py checks that for int8 and
/// ubinary); int8 / uint8 with ranges from `--calibration`, here ST's own rows, as its encode
/// takes them from its output.
#[test]
fn quantized_outputs_like_sentence_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let st_rows = reference_dir("all-MiniLM-L6-v2").join("embeddings.npy");
    let st_floats = reference("all-MiniLM-L6-v2", "embeddings.npy");
    let st_ranges = QuantizationRanges::from_embeddings(&st_floats).unwrap();
    let (model, input) = (minilm_dir(), texts_jsonl());
    for (quantization, extension) in [
        (Quantization::Ubinary, "npy"),
        (Quantization::Int8, "parquet"),
        (Quantization::Uint8, "safetensors"),
        (Quantization::Binary, "parquet"),
    ] {
        let output = tmp.path().join(format!("{quantization}.{extension}"));
        let name = quantization.to_string();
        let mut args = vec![
            "encode",
            "--model",
            s(&model),
            "--input",
            &input,
            "--output",
            s(&output),
            "--devices",
            "cpu:1,cpu:1",
            "--chunk-size",
            "30",
            "--progress-interval",
            "0",
            "--quantize",
            &name,
        ];
        if quantization.needs_ranges() {
            args.extend(["--calibration", s(&st_rows)]);
        }
        ok(&args);
        let (bytes, values, rows, dim) = read_dense_values(&output);
        assert_eq!(values, ValueType::of(Some(quantization)), "{name}");
        assert_eq!((rows, dim), (211, quantization.output_dim(384)), "{name}");
        let (expected, ..) = quantized_reference(&format!("{name}_of_reference.npy"));
        assert_quantized_close(
            &format!("--quantize {name} .{extension}"),
            &bytes,
            &expected,
            &st_floats,
            quantization,
            Some(&st_ranges),
            MAX_ABS_DIFF,
        );
        let report = read_report(&output.with_extension(format!("{extension}.report.json")));
        assert_eq!(report["settings"]["quantize"], name.as_str());
    }
}

/// Quantized shards, one killed and resumed, merge into a single run's rows; the calibration
/// is a float run's output, as a user would make it. Misuses of the flags are errors.
#[test]
fn quantized_shards_resume_and_merge() {
    use nix::sys::signal::Signal;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("many.jsonl");
    many_texts_jsonl(&input, 211 * 10);
    let model = tiny_model_dir("bert-mean-normalize-old");
    let floats = tmp.path().join("floats.npy");
    ok(&strs(&encode_args(&model, &input, &floats, &[])));

    let merged = tmp.path().join("int8.npy");
    let shard_args = |i: usize, extra: &[&str]| {
        let spec = format!("{i}/2");
        let mut extra: Vec<&str> = extra.to_vec();
        extra.extend(["--shard", &spec, "--quantize", "int8", "--calibration"]);
        extra.push(s(&floats));
        encode_args(&model, &input, &merged, &extra)
    };
    let first = tmp.path().join("int8-00000-of-00002.npy");
    let status = interrupt_after(&strs(&shard_args(0, &[])), &first, 300, Signal::SIGKILL);
    assert!(!status.success());
    ok(&strs(&shard_args(0, &["--resume"])));
    ok(&strs(&shard_args(1, &[])));
    ok(&["merge", "--output", s(&merged)]);

    let whole = read(&floats);
    let ranges = QuantizationRanges::from_embeddings(&whole).unwrap();
    let expected = quantize_embeddings(&whole, Quantization::Int8, Some(&ranges)).unwrap();
    let (bytes, values, rows, dim) = read_dense_values(&merged);
    assert_eq!((values, rows, dim), (ValueType::I8, 2110, whole.dim()));
    // Shards cut other length-sorted windows than a single run, so floats may differ in the
    // last bits, and a value at a level's edge by one level.
    assert_quantized_close(
        "merged int8 shards",
        &bytes,
        expected.as_u8(),
        &whole,
        Quantization::Int8,
        Some(&ranges),
        MAX_ABS_DIFF,
    );

    // A shard of other values is refused.
    let manifest = tmp.path().join("int8-00001-of-00002.npy.manifest.json");
    let mut edited: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    edited["values"] = "u8".into();
    std::fs::write(&manifest, edited.to_string()).unwrap();
    let error = fails(&["merge", "--output", s(&merged), "--overwrite"]);
    assert!(error.contains("the output format"), "{error}");

    // Misuses.
    let out = tmp.path().join("x.npy");
    let run = |extra: &[&str]| fails(&strs(&encode_args(&model, &input, &out, extra)));
    let error = run(&["--quantize", "int8"]);
    assert!(
        error.contains("--quantize int8 needs --calibration"),
        "{error}"
    );
    let error = run(&["--quantize", "int4"]);
    assert!(
        error.contains("--quantize must be float32, int8"),
        "{error}"
    );
    let error = run(&["--quantize", "binary", "--calibration", s(&floats)]);
    assert!(error.contains("int8 or uint8 only"), "{error}");
    let narrow = reference_dir("all-MiniLM-L6-v2").join("truncate_dim_8_normalized.npy");
    let error = run(&["--quantize", "uint8", "--calibration", s(&narrow)]);
    assert!(
        error.contains("truncate_dim_8_normalized.npy") && error.contains("8 dimensions"),
        "{error}"
    );
    let error = run(&["--quantize", "uint8", "--calibration", s(&input)]);
    assert!(
        error.contains("many.jsonl") && error.contains("not an embeddings file"),
        "{error}"
    );
    let splade = tiny_model_dir("splade-bert-tied-max");
    let sparse_out = tmp.path().join("s.jsonl");
    let error = fails(&strs(&encode_args(
        &splade,
        &input,
        &sparse_out,
        &["--quantize", "binary"],
    )));
    assert!(error.contains("applies to dense models"), "{error}");
    assert!(!out.exists() && !sparse_out.exists());
}

/// A record past `--max-record-bytes` stops the run at its line with the rows before it kept,
/// or goes to the rejects file; a file with no line break at all fails at line 1 at once.
#[test]
fn records_past_the_size_limit_are_bad_records() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir("bert-mean-normalize-old");
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, format!("hello\n{}\nworld\n", "x".repeat(200))).unwrap();
    let limit = ["--max-record-bytes", "100"];
    let output = tmp.path().join("o.npy");
    let error = fails(&strs(&encode_args(&model, &input, &output, &limit)));
    assert!(
        error.contains("in.txt:2") && error.contains("limit of 100 bytes"),
        "{error}"
    );
    assert!(
        error.contains("1 embeddings computed before this error"),
        "{error}"
    );

    let rejects = tmp.path().join("rejects.jsonl");
    let mut extra = limit.to_vec();
    extra.extend(["--rejects", s(&rejects)]);
    let output = tmp.path().join("kept.npy");
    ok(&strs(&encode_args(&model, &input, &output, &extra)));
    assert_eq!(read(&output).rows(), 2);
    let set_aside: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&rejects).unwrap().trim()).unwrap();
    assert_eq!(
        (set_aside["record"].as_u64(), set_aside["line"].as_u64()),
        (Some(1), Some(2))
    );

    // The largest limit there is: no overflow, every record read whole, as with the default.
    let unlimited = ["--max-record-bytes", "18446744073709551615"];
    let (all, default) = (tmp.path().join("all.npy"), tmp.path().join("default.npy"));
    ok(&strs(&encode_args(&model, &input, &all, &unlimited)));
    ok(&strs(&encode_args(&model, &input, &default, &[])));
    assert_eq!(read(&all).rows(), 3);
    assert_eq!(
        std::fs::read(&all).unwrap(),
        std::fs::read(&default).unwrap()
    );

    // A Parquet text past the limit: its row is the "line".
    let parquet = tmp.path().join("in.parquet");
    let texts = ["hello".to_string(), "x".repeat(200), "world".to_string()];
    write_parquet_texts(&parquet, &texts, None);
    let mut extra = limit.to_vec();
    extra.extend(["--text-field", "body"]);
    let error = fails(&strs(&encode_args(
        &model,
        &parquet,
        &tmp.path().join("q.npy"),
        &extra,
    )));
    assert!(
        error.contains("in.parquet:2") && error.contains("limit of 100 bytes"),
        "{error}"
    );

    // 32 MiB without a line break, past the default limit.
    let one_line = tmp.path().join("one-line.jsonl");
    std::fs::write(&one_line, vec![b'x'; 32 << 20]).unwrap();
    let error = fails(&strs(&encode_args(
        &model,
        &one_line,
        &tmp.path().join("p.npy"),
        &[],
    )));
    assert!(
        error.contains("one-line.jsonl:1") && error.contains("limit of 16777216 bytes"),
        "{error}"
    );
}

/// Writes float rows as an output of `format` would hold them (ids: the row numbers).
fn write_floats(path: &Path, format: pool_encode_io::OutputFormat, rows: &Embeddings) {
    let mut writer =
        pool_encode_io::RowWriter::create(path, format, rows.dim(), ValueType::F32).unwrap();
    let ids: Vec<String> = (0..rows.rows()).map(|i| i.to_string()).collect();
    writer
        .write_dense(&pool_encode_io::f32_bytes(rows.as_slice()), |i| &ids[i])
        .unwrap();
    writer.finish().unwrap();
}

/// `pool-encode quantize` on ST's float rows gives ST's `quantize_embeddings` bytes exactly, in
/// every format, with ranges from the whole input or from a calibration file; the ranges it
/// saves quantize the same way again.
#[test]
fn quantize_command_gives_sentence_transformers_bytes() {
    use pool_encode_io::OutputFormat;
    let tmp = tempfile::tempdir().unwrap();
    let st_floats = reference("all-MiniLM-L6-v2", "embeddings.npy");
    let npy = reference_dir("all-MiniLM-L6-v2").join("embeddings.npy");
    let (safetensors, parquet) = (
        tmp.path().join("floats.safetensors"),
        tmp.path().join("floats.parquet"),
    );
    write_floats(&safetensors, OutputFormat::Safetensors, &st_floats);
    write_floats(&parquet, OutputFormat::DenseParquet, &st_floats);
    let quantize = |input: &Path, output: &Path, quantization: &str, extra: &[&str]| {
        let mut args = vec![
            "quantize",
            "--input",
            s(input),
            "--output",
            s(output),
            "--quantize",
            quantization,
        ];
        args.extend(extra);
        let printed = ok(&args);
        assert_eq!(printed.trim(), s(output));
    };
    for (quantization, input, extension) in [
        ("int8", &npy, "npy"),
        ("uint8", &safetensors, "safetensors"),
        ("binary", &parquet, "parquet"),
        ("ubinary", &parquet, "npy"),
    ] {
        let output = tmp.path().join(format!("{quantization}.{extension}"));
        quantize(input, &output, quantization, &[]);
        let (bytes, values, rows, dim) = read_dense_values(&output);
        let expected = quantized_reference(&format!("{quantization}_of_reference.npy"));
        assert_eq!(
            (values, rows, dim),
            (expected.1, expected.2, expected.3),
            "{quantization}"
        );
        assert!(
            bytes == expected.0,
            "{quantization}: bytes differ from ST's"
        );
    }

    // ST's calibration_embeddings: the first 50 rows; values outside their ranges are clipped.
    let calibration = tmp.path().join("calibration.npy");
    let first_50 = Embeddings::new(st_floats.as_slice()[..50 * 384].to_vec(), 50, 384);
    write_floats(&calibration, OutputFormat::Npy, &first_50);
    let calibrated = tmp.path().join("calibrated.npy");
    quantize(
        &npy,
        &calibrated,
        "int8",
        &["--calibration", s(&calibration)],
    );
    let expected = quantized_reference("int8_calibrated_of_reference.npy");
    assert!(
        read_dense_values(&calibrated).0 == expected.0,
        "int8 with --calibration"
    );

    // The saved ranges are ST's `ranges` and give the same bytes back.
    let ranges = tmp.path().join("ranges.npy");
    let (first, again) = (tmp.path().join("first.npy"), tmp.path().join("again.npy"));
    quantize(&parquet, &first, "uint8", &["--ranges-output", s(&ranges)]);
    let saved = read(&ranges);
    let st_ranges = QuantizationRanges::from_embeddings(&st_floats).unwrap();
    assert_eq!(saved.rows(), 2);
    assert_eq!(
        (saved.row(0), saved.row(1)),
        (st_ranges.min(), st_ranges.max())
    );
    quantize(&parquet, &again, "uint8", &["--calibration", s(&ranges)]);
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

/// The two-pass way to ST's `encode(precision="int8")` for a large corpus: encode float32, then
/// quantize with ranges from every row. Against ST's own `encode(precision="int8")`.
#[test]
fn encode_then_quantize_like_sentence_transformers_encode_int8() {
    let tmp = tempfile::tempdir().unwrap();
    let (floats, int8) = (
        tmp.path().join("floats.parquet"),
        tmp.path().join("int8.parquet"),
    );
    let mut args = encode_args(&minilm_dir(), Path::new(&texts_jsonl()), &floats, &[]);
    args.iter_mut()
        .filter(|a| *a == "cpu:1")
        .for_each(|a| *a = "cpu:1,cpu:1".into());
    ok(&strs(&args));
    ok(&[
        "quantize",
        "--input",
        s(&floats),
        "--output",
        s(&int8),
        "--quantize",
        "int8",
    ]);
    let (bytes, values, rows, dim) = read_dense_values(&int8);
    assert_eq!((values, rows, dim), (ValueType::I8, 211, 384));
    let st_floats = reference("all-MiniLM-L6-v2", "embeddings.npy");
    let (expected, ..) = quantized_reference("encode_int8.npy");
    // Our ranges come from our floats: each end within MAX_ABS_DIFF of ST's, which moves a
    // level's edge by up to about 4 × MAX_ABS_DIFF (value, minimum and step).
    let differing = assert_quantized_close(
        "encode float32, then quantize int8",
        &bytes,
        &expected,
        &st_floats,
        Quantization::Int8,
        Some(&QuantizationRanges::from_embeddings(&st_floats).unwrap()),
        4.0 * MAX_ABS_DIFF,
    );
    eprintln!(
        "{differing} of {} int8 values differ from ST's",
        bytes.len()
    );
}

/// Every misuse of `quantize` is an error that names the file or flag, and leaves no output.
#[test]
fn quantize_command_errors() {
    use pool_encode_io::OutputFormat;
    let tmp = tempfile::tempdir().unwrap();
    let npy = reference_dir("all-MiniLM-L6-v2").join("embeddings.npy");
    let int8 = reference_dir("all-MiniLM-L6-v2").join("quantized/int8_of_reference.npy");
    let out = tmp.path().join("out.npy");
    let quantize = |input: &Path, output: &Path, extra: &[&str]| {
        let mut args = vec!["quantize", "--input", s(input), "--output", s(output)];
        args.extend(extra);
        fails(&args)
    };
    let expect = |error: String, parts: &[&str]| {
        for part in parts {
            assert!(error.contains(part), "{part:?} not in: {error}");
        }
    };
    let int8_flag = ["--quantize", "int8"];
    expect(
        quantize(&npy, &out, &["--quantize", "float32"]),
        &["nothing to do"],
    );
    expect(quantize(&npy, &out, &["--quantize", "int4"]), &["int4"]);
    expect(
        quantize(&int8, &out, &int8_flag),
        &["int8_of_reference.npy", "holds int8 values"],
    );
    let parquet = tmp.path().join("out.parquet");
    expect(
        quantize(&npy, &parquet, &int8_flag),
        &["out.parquet", "has none"],
    );
    expect(quantize(&npy, &npy, &int8_flag), &["is the input"]);
    expect(
        quantize(
            &npy,
            &out,
            &["--quantize", "binary", "--calibration", s(&npy)],
        ),
        &["--calibration", "int8 or uint8 only"],
    );
    let ranges_txt = tmp.path().join("ranges.txt");
    expect(
        quantize(
            &npy,
            &out,
            &["--quantize", "int8", "--ranges-output", s(&ranges_txt)],
        ),
        &["ranges.txt", ".npy or .safetensors"],
    );
    let narrow = reference_dir("all-MiniLM-L6-v2").join("truncate_dim_8_normalized.npy");
    expect(
        quantize(
            &npy,
            &out,
            &["--quantize", "uint8", "--calibration", s(&narrow)],
        ),
        &["truncate_dim_8_normalized.npy", "8 dimensions"],
    );
    let one_row = tmp.path().join("one.npy");
    write_floats(
        &one_row,
        OutputFormat::Npy,
        &Embeddings::new(vec![1.0, 2.0], 1, 2),
    );
    expect(
        quantize(&one_row, &out, &int8_flag),
        &["one.npy", "at least 2"],
    );
    let nan = tmp.path().join("nan.npy");
    write_floats(
        &nan,
        OutputFormat::Npy,
        &Embeddings::new(vec![1.0, 2.0, f32::NAN, 0.5, 3.0, 1.0], 3, 2),
    );
    expect(
        quantize(&nan, &out, &int8_flag),
        &["nan.npy", "row 2", "not a finite number"],
    );
    let missing = tmp.path().join("missing.npy");
    expect(quantize(&missing, &out, &int8_flag), &["missing.npy"]);
    let texts = data_dir().join("texts.jsonl");
    expect(
        quantize(&texts, &out, &int8_flag),
        &["texts.jsonl", "not an embeddings file"],
    );
    assert!(!out.exists() && !pool_encode_io::partial_path(&out).exists());

    // An existing output is kept unless --overwrite.
    std::fs::write(&out, "keep me").unwrap();
    expect(quantize(&npy, &out, &int8_flag), &["exists", "--overwrite"]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    ok(&[
        "quantize",
        "--input",
        s(&npy),
        "--output",
        s(&out),
        "--quantize",
        "binary",
        "--overwrite",
    ]);
    assert_eq!(read_dense_values(&out).1, ValueType::I8);
}
