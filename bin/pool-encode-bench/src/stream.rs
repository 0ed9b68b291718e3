//! Memory of a long run: streams N short synthetic texts through the `pool-encode` binary for
//! each N asked for, sampling the resident memory of the coordinator and of every worker
//! process while it runs; prints texts/s and peak RSS per N, so one can see that the
//! coordinator's memory does not grow with N (goal: under 300 MB).
//!
//!     cargo build --release -p pool-encode -p pool-encode-bench
//!     target/release/stream-bench --texts 10000,100000,1000000 --model tests/data/models/bert-mean-normalize-old
//!
//! The texts are 4 to 16 words from a fixed vocabulary (seeded, the same every run).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Numbers of texts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    texts: Vec<u64>,
    /// Model folder.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: PathBuf,
    /// Worker devices (`pool-encode encode --devices`).
    #[arg(long, default_value = "cpu:1,cpu:1")]
    devices: String,
    /// Output file extension: npy, safetensors, parquet (dense) or jsonl (sparse models).
    #[arg(long, default_value = "npy")]
    format: String,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// The pool-encode binary (default: next to this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where inputs and outputs go (default: a temporary folder, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Peak resident memory seen, in kB, for the coordinator and for its largest worker.
#[derive(Default, Debug)]
struct Peaks {
    coordinator_kb: u64,
    worker_kb: u64,
    workers: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("pool-encode"),
    };
    if !binary.exists() {
        bail!(
            "{}: not found; cargo build --release -p pool-encode first",
            binary.display()
        );
    }
    let temporary = tempfile_dir(&args.dir)?;
    let dir = temporary.as_path();
    println!(
        "model {} on {}, batch {}, output .{}",
        args.model.display(),
        args.devices,
        args.batch_size,
        args.format
    );
    println!(
        "{:>10} {:>9} {:>9} {:>18} {:>16} {:>8}",
        "texts", "seconds", "texts/s", "coordinator peak", "worker peak", "workers"
    );
    let mut coordinator_peaks = Vec::new();
    for &n in &args.texts {
        let input = dir.join(format!("texts-{n}.jsonl"));
        write_texts(&input, n)?;
        let output = dir.join(format!("out-{n}.{}", args.format));
        let started = Instant::now();
        let mut child = Command::new(&binary)
            .args(["encode", "--model"])
            .arg(&args.model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args([
                "--devices",
                &args.devices,
                "--overwrite",
                "--progress-interval",
                "0",
            ])
            .args(["--batch-size", &args.batch_size.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start pool-encode")?;
        let pid = child.id();
        let mut peaks = Peaks::default();
        while child.try_wait()?.is_none() {
            sample(pid, &mut peaks);
            std::thread::sleep(Duration::from_millis(100));
        }
        let seconds = started.elapsed().as_secs_f64();
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "pool-encode failed for {n} texts:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(report_path(&output))?)?;
        if report["texts"].as_u64() != Some(n) {
            bail!("the run wrote {} rows, not {n}", report["texts"]);
        }
        println!(
            "{:>10} {:>9.1} {:>9.0} {:>15.1} MB {:>13.1} MB {:>8}",
            n,
            seconds,
            n as f64 / seconds,
            peaks.coordinator_kb as f64 / 1024.0,
            peaks.worker_kb as f64 / 1024.0,
            peaks.workers
        );
        coordinator_peaks.push(peaks.coordinator_kb);
        std::fs::remove_file(&input)?;
        std::fs::remove_file(&output)?;
    }
    let (least, most) = (
        coordinator_peaks.iter().min().copied().unwrap_or(0),
        coordinator_peaks.iter().max().copied().unwrap_or(0),
    );
    println!(
        "coordinator peak RSS: {:.1}–{:.1} MB over N = {:?} (goal < 300 MB, flat in N): {}",
        least as f64 / 1024.0,
        most as f64 / 1024.0,
        args.texts,
        if most < 300 * 1024 { "met" } else { "NOT met" }
    );
    if args.dir.is_none() {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}

fn tempfile_dir(dir: &Option<PathBuf>) -> Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("stream-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn report_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".report.json");
    output.with_file_name(name)
}

/// `n` short texts, one JSON object a line, from a seeded generator.
fn write_texts(path: &Path, n: u64) -> Result<()> {
    use std::io::Write;
    const WORDS: [&str; 24] = [
        "the",
        "model",
        "encodes",
        "short",
        "documents",
        "quickly",
        "search",
        "index",
        "vector",
        "a",
        "query",
        "matches",
        "similar",
        "passages",
        "in",
        "large",
        "collections",
        "of",
        "text",
        "every",
        "night",
        "cluster",
        "jobs",
        "run",
    ];
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..n {
        let words = 4 + next() % 13;
        let text: Vec<&str> = (0..words)
            .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
            .collect();
        writeln!(file, "{{\"id\": {i}, \"text\": \"{}\"}}", text.join(" "))?;
    }
    file.flush()?;
    Ok(())
}

/// Reads the peak RSS (VmHWM) of `pid` and of its child processes (the workers).
fn sample(pid: u32, peaks: &mut Peaks) {
    if let Some(kb) = peak_kb(pid) {
        peaks.coordinator_kb = peaks.coordinator_kb.max(kb);
    }
    let children = children_of(pid);
    peaks.workers = peaks.workers.max(children.len());
    for child in children {
        if let Some(kb) = peak_kb(child) {
            peaks.worker_kb = peaks.worker_kb.max(kb);
        }
    }
}

fn peak_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
