//! Benchmark: encode a corpus with pool-encode and with sentence-transformers on this machine,
//! in the same run, and print texts/s, tokens/s and their ratio, plus how closely the two
//! outputs agree.
//!
//!     scripts/reference-env.sh                 # once: ST + torch in .venv-reference
//!     cargo run --release -p pool-encode-bench -- --limit 3000
//!
//! The corpus defaults to Debian's `fortunes` (apt-get install fortunes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use pool_encode_encoder::{Device, EncodeOptions, SentenceEncoder};

#[derive(Parser)]
struct Args {
    /// Model folder.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: PathBuf,
    /// `fortunes` (Debian's package) or a .jsonl / .txt file.
    #[arg(long, default_value = "fortunes")]
    corpus: String,
    /// Use only the first N texts.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Threads for both sides (torch.set_num_threads and cpu:N).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long)]
    max_seq_length: Option<usize>,
    /// Python with sentence-transformers (default: .venv-reference/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Measure pool-encode only.
    #[arg(long)]
    skip_st: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let texts = load_corpus(&args.corpus, args.limit)?;
    let device = Device::Cpu {
        threads: Some(args.threads),
    };
    let mut encoder = SentenceEncoder::load(&args.model, device)?;
    if let Some(n) = args.max_seq_length {
        encoder.set_max_seq_length(n)?;
    }
    let tokens: usize = texts
        .iter()
        .map(|t| encoder.tokenizer().encode(t).map(|e| e.len()))
        .sum::<Result<usize, _>>()?;
    println!(
        "corpus: {} ({} texts, {:.1} tokens per text after truncation to {}), model {}, {} threads, batch {}",
        args.corpus,
        texts.len(),
        tokens as f64 / texts.len() as f64,
        encoder.max_seq_length(),
        args.model.display(),
        args.threads,
        args.batch_size
    );

    let options = EncodeOptions {
        batch_size: args.batch_size,
        ..Default::default()
    };
    encoder.encode(&texts[..texts.len().min(64)], &options)?; // warm-up, as on the ST side
    let start = Instant::now();
    let ours = encoder.encode(&texts, &options)?;
    let our_seconds = start.elapsed().as_secs_f64();
    let line = |name: &str, seconds: f64| {
        println!(
            "{name:<50} {:>9.1} texts/s {:>10.0} tokens/s {:>8.1} s",
            texts.len() as f64 / seconds,
            tokens as f64 / seconds,
            seconds
        )
    };
    line(&format!("pool-encode (cpu:{})", args.threads), our_seconds);
    if args.skip_st {
        return Ok(());
    }

    let dir = std::env::temp_dir().join(format!("pool-encode-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("texts.jsonl");
    let lines: String = texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(&input, lines)?;
    let st_output = dir.join("st.npy");
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| PathBuf::from(".venv-reference/bin/python"));
    let mut command = Command::new(&python);
    command
        .arg("scripts/st_bench.py")
        .args(["--model", &args.model.to_string_lossy()])
        .args(["--input", &input.to_string_lossy()])
        .args(["--output", &st_output.to_string_lossy()])
        .args(["--batch-size", &args.batch_size.to_string()])
        .args(["--threads", &args.threads.to_string()]);
    if let Some(n) = args.max_seq_length {
        command.args(["--max-seq-length", &n.to_string()]);
    }
    let out = command.output().with_context(|| {
        format!(
            "running {} (create it with scripts/reference-env.sh)",
            python.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "sentence-transformers side failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|&b| b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap_or_default(),
    )?;
    let st_seconds = report["seconds"]
        .as_f64()
        .context("no seconds in ST report")?;
    line(
        &format!(
            "sentence-transformers (torch {}, {} threads)",
            report["torch"].as_str().unwrap_or("?"),
            report["threads"]
        ),
        st_seconds,
    );
    println!(
        "ratio pool-encode / sentence-transformers: {:.2}x",
        st_seconds / our_seconds
    );

    let (st, rows, dim) = pool_encode_io::read_npy(&st_output)?;
    let mut worst_cosine = 1f64;
    let mut worst_diff = 0f32;
    for (a, b) in ours.iter().zip(st.chunks_exact(dim)) {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        worst_cosine = worst_cosine.min(dot / (norm(a) * norm(b)).max(1e-30));
        worst_diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(worst_diff, f32::max);
    }
    println!(
        "agreement over {rows} rows: min cosine {worst_cosine:.7}, max |diff| {worst_diff:.2e}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// Debian's fortunes (texts separated by lines holding `%`), or a .jsonl / .txt file.
fn load_corpus(corpus: &str, limit: Option<usize>) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    if corpus == "fortunes" {
        let dir = Path::new("/usr/share/games/fortunes");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .context("no /usr/share/games/fortunes: apt-get install fortunes")?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.retain(|p| p.extension().is_none() && p.is_file());
        files.sort();
        for file in files {
            let raw = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
            let mut current = String::new();
            for line in raw.lines() {
                if line == "%" {
                    if !current.trim().is_empty() {
                        texts.push(current.trim_end_matches('\n').to_string());
                    }
                    current.clear();
                } else {
                    current.push_str(line);
                    current.push('\n');
                }
            }
            if !current.trim().is_empty() {
                texts.push(current.trim_end_matches('\n').to_string());
            }
        }
    } else {
        let reader = pool_encode_io::InputReader::open(Path::new(corpus), Default::default())?;
        for record in reader {
            texts.push(record?.text);
        }
    }
    if let Some(n) = limit {
        texts.truncate(n);
    }
    if texts.is_empty() {
        bail!("{corpus}: no texts");
    }
    Ok(texts)
}
