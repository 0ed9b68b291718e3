//! Benchmark: encode a corpus with pool-encode (in process and through its worker pool) and
//! with sentence-transformers (single process and its own multi-process pool) on this machine,
//! in the same run; print texts/s, tokens/s, the ratios, the pool's start-up time to its first
//! result, and how closely the outputs agree.
//!
//!     scripts/reference-env.sh                 # once: ST + torch in .venv-reference
//!     cargo run --release -p pool-encode-bench -- --limit 3000
//!
//! The corpus defaults to Debian's `fortunes` (apt-get install fortunes).
//!
//! With `--device cuda:0` (a build with `--features cuda`) it compares GPU paths instead: our
//! f32 / f16 / bf16 in process, pools of one and two workers on the GPU, and ST on the GPU in
//! f32 and f16, with the GPU's mean utilisation during each run (sampled with nvidia-smi).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use pool_encode_encoder::model::ModelFolder;
use pool_encode_encoder::model::ops::Window;
use pool_encode_encoder::{
    Device, Embeddings, EncodeOptions, Precision, SentenceEncoder, SparseEmbeddings, SparseEncoder,
};
use pool_encode_pool::{Pool, PoolConfig, PoolEncodeOptions};

#[derive(Parser)]
struct Args {
    /// Model folder.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: PathBuf,
    /// `fortunes` (Debian's package, ~42 tokens a text), `fortunes-long` (consecutive fortunes
    /// joined into texts of at least 200 words: ~256 tokens each once truncated to MiniLM's
    /// max_seq_length), `fortunes-docs` (documents of at least 3,000 words, one starting at every
    /// 10th fortune, ~1,500: the tokenizer's work, not the model's, grows with them), or a
    /// .jsonl / .txt file.
    #[arg(long, default_value = "fortunes")]
    corpus: String,
    /// The machine's f32 peak in GFLOP/s for the threads used, for the fraction-of-peak line
    /// (default: threads × the CPU's clock from /proc/cpuinfo × 32 FLOP/cycle, AVX2's two FMA
    /// units of eight lanes).
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Use only the first N texts.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Threads in all (torch.set_num_threads, cpu:N, workers × threads).
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
    /// `cpu`: the CPU comparison. `cuda:K` / `wgpu:K`: the GPU comparison on that device.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// GPU comparison: our precisions to measure (ST runs f32 and f16). A model that refuses
    /// f16 (Gemma 3) skips it, and ST runs bf16 in its place.
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,bf16")]
    precisions: Vec<Precision>,
    /// Padded tokens per batch at most, for our side (ST has no such option).
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// Batches in flight at once in process, one row each (pool workers use the encoder's
    /// default: on the CPU a batch per thread, at most 4; on a GPU 2).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    concurrent_batches: Vec<usize>,
    /// CPU comparison: measure in process only (no pool rows), e.g. to compare batches in
    /// flight in separate runs.
    #[arg(long)]
    skip_pool: bool,
    /// GPU comparison: batch size for ST (default: --batch-size).
    #[arg(long)]
    st_batch_size: Option<usize>,
    /// `sparse`: a SPLADE model (scripts/make_splade_model.py makes one), compared with ST's
    /// SparseEncoder on the CPU.
    #[arg(long, default_value = "dense")]
    kind: String,
}

struct Measured {
    name: String,
    seconds: f64,
    embeddings: Option<Embeddings>,
    /// Mean GPU utilisation (%) and peak memory used (MiB) while it ran.
    gpu: Option<(f64, f64)>,
}

fn main() -> Result<()> {
    // The benchmark is its own pool worker, like the pool-encode binary.
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("worker") {
        std::process::exit(match pool_encode_pool::worker::main(&raw[2..]) {
            code if code == std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    let args = Args::parse();
    let texts = load_corpus(&args.corpus, args.limit)?;
    if args.kind == "sparse" {
        sparse_comparison(&args, &texts)
    } else if matches!(args.device, Device::Cpu { .. }) {
        cpu_comparison(&args, &texts)
    } else {
        gpu_comparison(&args, &texts)
    }
}

/// The CPU comparison: ours in process and in pools of CPU workers, ST single and its own
/// multi-process pool, all with `--threads` threads in all.
fn cpu_comparison(args: &Args, texts: &[String]) -> Result<()> {
    let (mut encoder, options, work) = load_encoder(
        args,
        texts,
        Device::Cpu {
            threads: Some(args.threads),
        },
        Precision::F32,
        &format!("{} threads in all, batch {}", args.threads, args.batch_size),
    )?;
    let mut results = Vec::new();

    // In process, with each number of batches in flight: 1 puts every thread inside one batch;
    // more give each thread a batch of its own (idle threads split the others' ops).
    // A warm-up, as on the ST side.
    encoder.encode(&texts[..texts.len().min(64)], &options)?;
    let label = format!("cpu:{}", args.threads);
    in_process_rows(&mut encoder, args, texts, &options, &label, &mut results)?;
    drop(encoder);

    let one = Device::Cpu { threads: Some(1) };
    let all = Device::Cpu {
        threads: Some(args.threads),
    };
    // (devices, chunk size): ST's default chunking, and for one worker also a single chunk, whose
    // batches are exactly the in-process encoder's: that row isolates the cost of the processes
    // and IPC from the cost of chunking.
    let runs = if args.skip_pool {
        Vec::new()
    } else {
        vec![
            (vec![one; args.threads], None),
            (vec![all], None),
            (vec![all], Some(texts.len())),
        ]
    };
    for (devices, chunk_size) in runs {
        let names: Vec<String> = devices.iter().map(ToString::to_string).collect();
        let pool_options = PoolEncodeOptions {
            encode: options.clone(),
            chunk_size,
            ..Default::default()
        };
        let chunking = match chunk_size {
            None => "ST chunking",
            Some(_) => "one chunk = in-process batches",
        };
        let name = format!("pool-encode pool [{}], {chunking}", names.join(","));
        // A short warm-up, as on the ST side.
        let warm_up = &texts[..texts.len().min(64)];
        let config = pool_config(args, devices, Precision::F32)?;
        results.push(measure_pool(
            name,
            config,
            texts,
            warm_up,
            &pool_options,
            false,
        )?);
    }

    let st_single = if args.skip_st {
        None
    } else {
        let dir = write_corpus(texts)?;
        let single = run_st(args, &dir, StRun::cpu(0))?;
        let pool = run_st(args, &dir, StRun::cpu(args.threads))?;
        tokenization_comparison(args, texts, &dir)?;
        std::fs::remove_dir_all(&dir).ok();
        let seconds = single.seconds;
        results.push(single);
        results.push(pool);
        Some(seconds)
    };
    report(&results, texts.len(), work, peak_gflops(args), st_single);
    Ok(())
}

/// The SPLADE comparison on the CPU: ours in process and in a pool of single-thread workers, ST's
/// SparseEncoder single, all with `--threads` threads in all; rows compared with ST's.
fn sparse_comparison(args: &Args, texts: &[String]) -> Result<()> {
    let options = EncodeOptions {
        batch_size: args.batch_size,
        max_batch_tokens: args.max_batch_tokens,
        ..Default::default()
    };
    let threads = Device::Cpu {
        threads: Some(args.threads),
    };
    let mut encoder = SparseEncoder::load(&args.model, threads)?;
    if let Some(n) = args.max_seq_length {
        encoder.set_max_seq_length(n)?;
    }
    let tokens = encoder.prepare(texts, &options)?.tokens();
    println!(
        "corpus: {} ({} texts, {:.1} tokens per text), SPLADE model {} (vocabulary {}), {} threads in all, batch {}",
        args.corpus,
        texts.len(),
        tokens as f64 / texts.len() as f64,
        args.model.display(),
        encoder.embedding_dimension(),
        args.threads,
        args.batch_size
    );
    let mut rows: Vec<(String, f64, SparseEmbeddings)> = Vec::new();
    encoder.encode(&texts[..texts.len().min(64)], &options)?; // warm-up, as on the ST side
    let start = Instant::now();
    let ours = encoder.encode(texts, &options)?;
    rows.push((
        format!("pool-encode in process (cpu:{})", args.threads),
        start.elapsed().as_secs_f64(),
        ours,
    ));
    drop(encoder);

    let mut config = pool_config(
        args,
        vec![Device::Cpu { threads: Some(1) }; args.threads],
        Precision::F32,
    )?;
    config.kind = pool_encode_pool::ModelKind::Sparse;
    let pool = Pool::start(config)?;
    let pool_options = PoolEncodeOptions {
        encode: options.clone(),
        ..Default::default()
    };
    pool.encode_sparse(&texts[..texts.len().min(64)], &pool_options)?;
    let start = Instant::now();
    let out = pool.encode_sparse(texts, &pool_options)?;
    rows.push((
        format!("pool-encode pool [{}×cpu:1]", args.threads),
        start.elapsed().as_secs_f64(),
        out.embeddings,
    ));
    drop(pool);

    let mut st_seconds = None;
    if !args.skip_st {
        let dir = write_corpus(texts)?;
        let (seconds, st_rows) = run_st_sparse(args, &dir, rows[0].2.dim())?;
        std::fs::remove_dir_all(&dir).ok();
        st_seconds = Some(seconds);
        rows.push((
            format!(
                "sentence-transformers SparseEncoder ({} threads)",
                args.threads
            ),
            seconds,
            st_rows,
        ));
    }
    println!();
    for (name, seconds, _) in &rows {
        let ratio = st_seconds.map_or(String::new(), |st| format!("{:>6.2}x ST", st / seconds));
        println!(
            "{name:<62} {:>8.1} texts/s {:>9.0} tokens/s {seconds:>8.2} s {ratio}",
            texts.len() as f64 / seconds,
            tokens as f64 / seconds,
        );
    }
    if let Some((_, _, reference)) = rows.iter().find(|r| r.0.starts_with("sentence")) {
        for (name, _, ours) in rows.iter().filter(|r| !r.0.starts_with("sentence")) {
            let worst = sparse_difference(ours, reference);
            let active = ours.sparsity().active_dims;
            println!(
                "agreement of {name} with ST: max |diff| {worst:.2e} over every entry of either; {active:.1} active dims per row"
            );
        }
    }
    Ok(())
}

/// ST's SparseEncoder on the corpus in `dir`: seconds and its rows.
fn run_st_sparse(args: &Args, dir: &Path, dim: usize) -> Result<(f64, SparseEmbeddings)> {
    let output = dir.join("st-sparse.jsonl");
    let mut command = st_command(args, dir);
    command
        .arg("--sparse")
        .args(["--output", &output.to_string_lossy()])
        .args(["--batch-size", &args.batch_size.to_string()]);
    let report = run_st_command(command, args)?;
    let seconds = report["seconds"]
        .as_f64()
        .context("no seconds in ST report")?;
    let mut rows = SparseEmbeddings::new(dim);
    for line in std::fs::read_to_string(&output)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let indices: Vec<u32> = serde_json::from_value(v["indices"].clone())?;
        let values: Vec<f32> = serde_json::from_value(v["values"].clone())?;
        rows.push(&indices, &values);
    }
    Ok((seconds, rows))
}

/// Largest |ours − reference| over every entry either row has.
fn sparse_difference(ours: &SparseEmbeddings, reference: &SparseEmbeddings) -> f32 {
    let mut worst = 0f32;
    for (a, b) in ours.iter().zip(reference.iter()) {
        let value = |row: &pool_encode_encoder::SparseRow, i: u32| {
            row.indices.binary_search(&i).map_or(0.0, |k| row.values[k])
        };
        for &i in a.indices.iter().chain(b.indices) {
            worst = worst.max((value(&a, i) - value(&b, i)).abs());
        }
    }
    if ours.rows() != reference.rows() {
        return f32::INFINITY;
    }
    worst
}

/// The GPU comparison: ours in each precision, pools of one and two workers on the GPU, ST in
/// f32 and f16 on the same GPU, each with the GPU's utilisation while it ran.
fn gpu_comparison(args: &Args, texts: &[String]) -> Result<()> {
    let mut results = Vec::new();
    // A folder that does not load here fails below, with the encoder's error.
    let refusal = ModelFolder::load(&args.model).ok().and_then(|folder| {
        let module = folder.transformer().ok()?;
        module.architecture.float16_refusal()
    });
    let (precisions, st_half) = match refusal {
        Some(why) => {
            println!("f16 skipped, ST runs bfloat16 instead: {why}");
            let kept = args.precisions.iter().copied();
            (kept.filter(|&p| p != Precision::F16).collect(), "bfloat16")
        }
        None => (args.precisions.clone(), "float16"),
    };
    // burn fixes one float type per device and process: only the first precision runs in this
    // process; every precision runs in pool workers (fresh processes) below.
    let precision = precisions.first().copied().unwrap_or_default();
    let (mut encoder, options, work) = load_encoder(
        args,
        texts,
        args.device,
        precision,
        &format!(
            "{}, batch {} (ours at most {:?} tokens), ST batch {}",
            args.device,
            args.batch_size,
            args.max_batch_tokens,
            args.st_batch_size.unwrap_or(args.batch_size)
        ),
    )?;
    // The first pass compiles kernels for the shapes it meets: timed apart.
    let start = Instant::now();
    encoder.encode(texts, &options)?;
    let cold = start.elapsed().as_secs_f64();
    println!("in process {precision}: first pass (kernel compilation included) {cold:.2} s");
    let label = format!("{}, {precision}", args.device);
    in_process_rows(&mut encoder, args, texts, &options, &label, &mut results)?;
    drop(encoder);
    let pools = precisions
        .iter()
        .flat_map(|&precision| [(1, precision), (2, precision)]);
    for (workers, precision) in pools {
        let pool_options = PoolEncodeOptions {
            encode: options.clone(),
            ..Default::default()
        };
        let name = format!("pool-encode pool {workers}×{} ({precision})", args.device);
        // Warm-up: a whole pass, which compiles kernels in every worker.
        let config = pool_config(args, vec![args.device; workers], precision)?;
        results.push(measure_pool(
            name,
            config,
            texts,
            texts,
            &pool_options,
            true,
        )?);
    }
    let st_f32 = if args.skip_st {
        None
    } else {
        let dir = write_corpus(texts)?;
        let f32_run = run_st(args, &dir, StRun::gpu("float32"))?;
        let seconds = f32_run.seconds;
        results.push(f32_run);
        results.push(run_st(args, &dir, StRun::gpu(st_half))?);
        std::fs::remove_dir_all(&dir).ok();
        Some(seconds)
    };
    report(&results, texts.len(), work, None, st_f32);
    Ok(())
}

/// Our encoder on `device` as `args` say, with the options both sides use; prints the corpus
/// line (tokens counted after truncation, as encoded) ending in `setup`.
fn load_encoder(
    args: &Args,
    texts: &[String],
    device: Device,
    precision: Precision,
    setup: &str,
) -> Result<(SentenceEncoder, EncodeOptions, Work)> {
    let options = EncodeOptions {
        batch_size: args.batch_size,
        max_batch_tokens: args.max_batch_tokens,
        ..Default::default()
    };
    let mut encoder = SentenceEncoder::load_with_precision(&args.model, device, precision)?;
    if let Some(n) = args.max_seq_length {
        encoder.set_max_seq_length(n)?;
    }
    let prepared = encoder.prepare(texts, &options)?;
    let tokens = prepared.tokens();
    let flops = useful_flops(&encoder, &prepared.token_counts());
    let (work, cut) = match encoder.max_seq_length() {
        usize::MAX => ("a table row added per token", "not truncated".to_string()),
        n => (
            "linear layers and attention",
            format!("after truncation to {n}"),
        ),
    };
    println!(
        "useful work: {:.3} TFLOP (real tokens only: {work})",
        flops / 1e12
    );
    println!(
        "corpus: {} ({} texts, {:.1} tokens per text {cut}), model {}, {setup}",
        args.corpus,
        texts.len(),
        tokens as f64 / texts.len() as f64,
        args.model.display(),
    );
    Ok((encoder, options, Work { tokens, flops }))
}

/// One row per `--concurrent-batches` value: `encoder` over every text with that many batches
/// in flight (and the GPU's utilisation meanwhile, where there is one).
fn in_process_rows(
    encoder: &mut SentenceEncoder,
    args: &Args,
    texts: &[String],
    options: &EncodeOptions,
    label: &str,
    results: &mut Vec<Measured>,
) -> Result<()> {
    let on_gpu = !matches!(args.device, Device::Cpu { .. });
    for &batches in &args.concurrent_batches {
        encoder.set_concurrent_batches(batches)?;
        let monitor = on_gpu.then(GpuMonitor::start);
        let start = Instant::now();
        let out = encoder.encode(texts, options)?;
        let seconds = start.elapsed().as_secs_f64();
        results.push(Measured {
            name: format!("pool-encode in process ({label}, {batches} in flight)"),
            seconds,
            embeddings: Some(out),
            gpu: monitor.and_then(GpuMonitor::stop),
        });
    }
    Ok(())
}

/// What a corpus costs the model: its tokens and the FLOPs of the useful (unpadded) work.
#[derive(Clone, Copy)]
struct Work {
    tokens: usize,
    flops: f64,
}

/// FLOPs of one encoder pass over texts of `lengths` tokens, padding excluded: per layer and
/// token 2·(2·h·(q + kv) + 2·h·ffn) for the projections (q and kv: the query and key / value
/// widths) and the feed-forward (3·h·ffn for a gated block), plus 4·k·q for Q·Kᵀ and P·V over
/// the k keys a token sees (the whole text, or its layer's window: local, causal, or
/// sliding). A `StaticEmbedding` model adds a row per token: one FLOP a value.
fn useful_flops(encoder: &SentenceEncoder, lengths: &[usize]) -> f64 {
    let Ok(transformer) = encoder.folder().transformer() else {
        let tokens: usize = lengths.iter().sum();
        return (tokens * encoder.embedding_dimension()) as f64;
    };
    let architecture = &transformer.architecture;
    let shape = architecture.shape();
    let (h, ffn) = (shape.hidden_size as f64, shape.intermediate_size as f64);
    let heads = architecture.heads();
    let (q, kv) = (heads.query_width() as f64, heads.key_value_width() as f64);
    // The window each layer's queries see keys in (`None`: the whole text), and the
    // feed-forward block's matrices.
    let layers: Vec<Option<Window>> = match architecture.layer_attention() {
        Some(layers) => layers.iter().map(|layer| layer.window).collect(),
        None => vec![None; shape.num_layers],
    };
    let ffn_matrices = if architecture.gated_feed_forward() {
        3.0
    } else {
        2.0
    };
    let mut flops = 0.0;
    for &n in lengths {
        for window in &layers {
            // Keys seen in a text of n tokens, summed over its queries.
            let seen: usize = match window {
                None => n * n,
                Some(window) => (0..n).map(|query| window.keys(query, n).len()).sum(),
            };
            flops += 2.0 * n as f64 * (2.0 * h * (q + kv) + ffn_matrices * h * ffn)
                + 4.0 * seen as f64 * q;
        }
    }
    flops
}

/// The f32 peak of `threads` cores: `--peak-gflops`, else clock × 32 FLOP/cycle (AVX2 + FMA:
/// two 8-lane FMA units), the clock from /proc/cpuinfo.
fn peak_gflops(args: &Args) -> Option<(f64, String)> {
    if let Some(peak) = args.peak_gflops {
        return Some((peak, "--peak-gflops".into()));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    let peak = args.threads as f64 * mhz / 1000.0 * 32.0;
    Some((
        peak,
        format!("{} threads × {mhz:.0} MHz × 32 FLOP/cycle", args.threads),
    ))
}

/// A pool on `devices` whose workers are this program (`worker` subcommand).
fn pool_config(args: &Args, devices: Vec<Device>, precision: Precision) -> Result<PoolConfig> {
    let mut config = PoolConfig::new(&args.model, devices);
    config.worker_command = Some((std::env::current_exe()?, vec!["worker".into()]));
    config.max_seq_length = args.max_seq_length;
    config.precision = precision;
    config.planned_options.batch_size = args.batch_size;
    config.planned_options.max_batch_tokens = args.max_batch_tokens;
    Ok(config)
}

/// Starts a pool, times start-up to its first result, encodes `warm_up`, then times `texts`
/// (sampling the GPU while it runs when `gpu`).
fn measure_pool(
    name: String,
    config: PoolConfig,
    texts: &[String],
    warm_up: &[String],
    options: &PoolEncodeOptions,
    gpu: bool,
) -> Result<Measured> {
    let start = Instant::now();
    let pool = Pool::start(config)?;
    pool.encode(&texts[..1], options)?;
    println!(
        "{name}: start-up to first result {:.2} s",
        start.elapsed().as_secs_f64()
    );
    pool.encode(warm_up, options)?;
    let monitor = gpu.then(GpuMonitor::start);
    let start = Instant::now();
    let out = pool.encode(texts, options)?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(Measured {
        name,
        seconds,
        embeddings: Some(out.embeddings),
        gpu: monitor.and_then(GpuMonitor::stop),
    })
}

/// Prints the table, each row's ratio to the first ST row, and every row's agreement with it.
fn report(
    results: &[Measured],
    texts: usize,
    work: Work,
    peak: Option<(f64, String)>,
    st_seconds: Option<f64>,
) {
    let tokens = work.tokens;
    println!();
    for r in results {
        let ratio = st_seconds.map_or(String::new(), |st| format!("{:>6.2}x ST", st / r.seconds));
        let gpu = r.gpu.map_or(String::new(), |(util, mem)| {
            format!("  GPU {util:>3.0}% busy, {mem:>6.0} MiB")
        });
        let of_peak = peak.as_ref().map_or(String::new(), |(peak, _)| {
            format!(
                "  {:>4.1}% of peak",
                100.0 * work.flops / r.seconds / 1e9 / peak
            )
        });
        println!(
            "{:<62} {:>8.1} texts/s {:>9.0} tokens/s {:>8.2} s {ratio}{gpu}{of_peak}",
            r.name,
            texts as f64 / r.seconds,
            tokens as f64 / r.seconds,
            r.seconds
        );
    }
    if let Some((peak, how)) = &peak {
        println!("peak: {peak:.1} GFLOP/s ({how}); % of peak = useful FLOPs per second / peak");
    }
    if let Some(st) = st_seconds {
        let best = results
            .iter()
            .filter(|r| r.name.starts_with("pool-encode"))
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
        if let Some(best) = best {
            println!(
                "best of ours: {} at {:.2}x sentence-transformers' single process",
                best.name,
                st / best.seconds
            );
        }
    }
    // Every row against the first ST row (ST f32 on the same device).
    let Some(reference) = results.iter().find(|r| r.name.starts_with("sentence")) else {
        return;
    };
    let Some(expected) = &reference.embeddings else {
        return;
    };
    for r in results.iter().filter(|r| !std::ptr::eq(*r, reference)) {
        if let Some(ours) = &r.embeddings {
            let (cosine, diff) = agreement(ours, expected);
            println!(
                "agreement of {} with {}: min cosine {cosine:.7}, max |diff| {diff:.2e}",
                r.name, reference.name
            );
        }
    }
}

/// The corpus as .jsonl in a fresh temporary folder, for the ST script.
fn write_corpus(texts: &[String]) -> Result<PathBuf> {
    let jsonl: String = texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    let dir = std::env::temp_dir().join(format!("pool-encode-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("texts.jsonl"), jsonl)?;
    Ok(dir)
}

/// One run of the ST script: CPU (single process, or its pool of `pool` workers) or GPU.
struct StRun {
    pool: usize,
    device: &'static str,
    dtype: &'static str,
}

impl StRun {
    fn cpu(pool: usize) -> Self {
        StRun {
            pool,
            device: "cpu",
            dtype: "float32",
        }
    }

    fn gpu(dtype: &'static str) -> Self {
        StRun {
            pool: 0,
            device: "cuda",
            dtype,
        }
    }
}

/// Samples `nvidia-smi` every 100 ms while a run goes; nothing where there is none.
struct GpuMonitor {
    child: Option<std::process::Child>,
}

impl GpuMonitor {
    fn start() -> Self {
        let child = Command::new("nvidia-smi")
            .args([
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                "-lms",
                "100",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        GpuMonitor { child }
    }

    /// Mean utilisation (%) and peak memory used (MiB) over the samples.
    fn stop(self) -> Option<(f64, f64)> {
        let mut child = self.child?;
        let _ = child.kill();
        let out = child.wait_with_output().ok()?;
        let samples: Vec<(f64, f64)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (u, m) = l.split_once(',')?;
                Some((u.trim().parse().ok()?, m.trim().parse().ok()?))
            })
            .collect();
        if samples.is_empty() {
            return None;
        }
        let util = samples.iter().map(|s| s.0).sum::<f64>() / samples.len() as f64;
        let mem = samples.iter().map(|s| s.1).fold(0.0, f64::max);
        Some((util, mem))
    }
}

/// `scripts/st_bench.py` on the corpus in `dir` with the arguments every run shares.
fn st_command(args: &Args, dir: &Path) -> Command {
    let mut command = Command::new(st_python(args));
    command
        .arg("scripts/st_bench.py")
        .args(["--model", &args.model.to_string_lossy()])
        .args(["--input", &dir.join("texts.jsonl").to_string_lossy()])
        .args(["--threads", &args.threads.to_string()]);
    if let Some(n) = args.max_seq_length {
        command.args(["--max-seq-length", &n.to_string()]);
    }
    command
}

fn st_python(args: &Args) -> PathBuf {
    args.python
        .clone()
        .unwrap_or_else(|| PathBuf::from(".venv-reference/bin/python"))
}

/// Runs an ST side and returns the JSON report it prints last.
fn run_st_command(mut command: Command, args: &Args) -> Result<serde_json::Value> {
    let out = command.output().with_context(|| {
        format!(
            "running {} (create it with scripts/reference-env.sh)",
            st_python(args).display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "sentence-transformers side failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let last = out
        .stdout
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    Ok(serde_json::from_slice(last)?)
}

/// Tokenization alone, ours and ST's (`model.tokenize`, the same Rust tokenizers library), on
/// `--threads` threads: the part of the work that grows with the length of a text, not with
/// `max_seq_length`. Prints one line.
fn tokenization_comparison(args: &Args, texts: &[String], dir: &Path) -> Result<()> {
    let folder = pool_encode_encoder::model::ModelFolder::load(&args.model)?;
    let mut tokenizer = pool_encode_encoder::TextTokenizer::load(&folder)?;
    if let Some(n) = args.max_seq_length {
        tokenizer.set_max_seq_length(n)?;
    }
    let threads = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    threads.install(|| tokenizer.encode_all(&texts[..texts.len().min(64)]))?;
    let start = Instant::now();
    threads.install(|| tokenizer.encode_all(texts))?;
    let ours = start.elapsed().as_secs_f64();

    let mut command = st_command(args, dir);
    command
        .arg("--tokenize-only")
        .env("RAYON_NUM_THREADS", args.threads.to_string());
    let report = run_st_command(command, args)?;
    let st = report["seconds"]
        .as_f64()
        .context("no seconds in ST's report")?;
    let rate = |seconds: f64| texts.len() as f64 / seconds;
    println!(
        "tokenization alone, {} threads: pool-encode {:.0} texts/s, sentence-transformers {:.0} texts/s: {:.2}x",
        args.threads,
        rate(ours),
        rate(st),
        st / ours
    );
    Ok(())
}

fn run_st(args: &Args, dir: &Path, run: StRun) -> Result<Measured> {
    let StRun {
        pool,
        device,
        dtype,
    } = run;
    let output = dir.join(format!("st-{pool}-{device}-{dtype}.npy"));
    let mut command = st_command(args, dir);
    command
        .args(["--output", &output.to_string_lossy()])
        .args([
            "--batch-size",
            &args.st_batch_size.unwrap_or(args.batch_size).to_string(),
        ])
        .args(["--pool", &pool.to_string()])
        .args(["--device", device, "--dtype", dtype]);
    let report = run_st_command(command, args)?;
    let embeddings = pool_encode_io::read_embeddings(&output)?;
    let name = match (pool, device) {
        (0, "cpu") => format!(
            "sentence-transformers (torch {}, {} threads)",
            report["torch"].as_str().unwrap_or("?"),
            report["threads"]
        ),
        (0, _) => format!(
            "sentence-transformers ({device}, {dtype}, torch {})",
            report["torch"].as_str().unwrap_or("?")
        ),
        (n, _) => format!("sentence-transformers pool ({n} CPU workers)"),
    };
    let gpu = report["gpu_util"].as_f64().zip(report["gpu_mem"].as_f64());
    Ok(Measured {
        name,
        seconds: report["seconds"]
            .as_f64()
            .context("no seconds in ST report")?,
        embeddings: Some(embeddings),
        gpu,
    })
}

fn agreement(ours: &Embeddings, reference: &Embeddings) -> (f64, f32) {
    let mut worst_cosine = 1f64;
    let mut worst_diff = 0f32;
    for (a, b) in ours.iter().zip(reference.iter()) {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        worst_cosine = worst_cosine.min(dot / (norm(a) * norm(b)).max(1e-30));
        worst_diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(worst_diff, f32::max);
    }
    (worst_cosine, worst_diff)
}

/// Consecutive `texts` joined (blank line between) until each has at least `words` words.
fn join_into_long_texts(texts: Vec<String>, words: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for text in texts {
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(&text);
        if current.split_whitespace().count() >= words {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// Documents of at least `words` words of consecutive texts, one starting at every `step`-th
/// text: they overlap, so a corpus of short texts gives many long ones.
fn overlapping_documents(texts: &[String], words: usize, step: usize) -> Vec<String> {
    let counts: Vec<usize> = texts.iter().map(|t| t.split_whitespace().count()).collect();
    let mut documents = Vec::new();
    for start in (0..texts.len()).step_by(step) {
        let mut total = 0;
        let Some(end) = (start..texts.len()).find(|&i| {
            total += counts[i];
            total >= words
        }) else {
            break;
        };
        documents.push(texts[start..=end].join("\n\n"));
    }
    documents
}

/// Debian's fortunes (texts separated by lines holding `%`), or a .jsonl / .txt file.
fn load_corpus(corpus: &str, limit: Option<usize>) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    if corpus == "fortunes-long" {
        texts = join_into_long_texts(load_corpus("fortunes", None)?, 200);
    } else if corpus == "fortunes-docs" {
        texts = overlapping_documents(&load_corpus("fortunes", None)?, 3000, 10);
    } else if corpus == "fortunes" {
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
            for line in raw.lines().chain(std::iter::once("%")) {
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
