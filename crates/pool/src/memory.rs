//! How many CPU workers the memory holds. Each worker process loads its own copy of the model,
//! so one single-threaded worker per core (the fastest default) can need more memory than a
//! large machine, or a container's limit, has: 64 workers of a base-sized model want ~45 GiB at
//! ST's default batch of 32 texts of 256 tokens, and more at larger batches or longer texts.
//! A worker the kernel kills for memory would be replaced and its chunk retried, and in the end
//! its texts blamed for it; so the default takes fewer workers with more threads each instead,
//! and explicit CPU devices that do not fit are warned about.

use pool_encode_encoder::model::modules::StaticEmbedding;
use pool_encode_encoder::model::{InputModule, ModelFolder};
use pool_encode_encoder::{Device, EncodeOptions, default_concurrent_batches};

const MIB: u64 = 1 << 20;

/// What one worker of a model holds in memory besides its fixed overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFootprint {
    /// The weights as float32, the dtype they are computed in on the CPU. The weights file
    /// itself is mapped, and its pages are shared between the workers.
    pub weights: u64,
    /// Activations per token of a batch at the peak of a layer: the CPU path packs each
    /// batch's real tokens (no padding) and computes attention per text, so a layer's peak is
    /// in the feed-forward block, holding its input, its intermediate and its output
    /// ([`ArchitectureConfig::peak_floats_per_token`](pool_encode_encoder::model::ArchitectureConfig::peak_floats_per_token)).
    /// A `StaticEmbedding` model's batch holds only the padded token ids, type ids and mask.
    pub token_activations: u64,
}

/// Tokens a text is taken to have when nothing cuts texts (a `StaticEmbedding` model without
/// truncation), to size its batches: long documents, as the benchmark's `fortunes-docs` are.
pub const UNCUT_TEXT_TOKENS: usize = 8192;

impl ModelFootprint {
    /// From the model folder's config and safetensors header; `None` if the weights cannot be
    /// read (the worker will say why).
    pub fn of(folder: &ModelFolder) -> Option<ModelFootprint> {
        Some(match &folder.input {
            InputModule::Transformer(module) => {
                let weights =
                    pool_encode_encoder::model::weights::Weights::open(&folder.weights_path(), "")
                        .ok()?;
                ModelFootprint {
                    weights: weights.f32_bytes(),
                    token_activations: 4 * module.architecture.peak_floats_per_token() as u64,
                }
            }
            InputModule::Static(table) => ModelFootprint {
                weights: StaticEmbedding::table_bytes(table).ok()?,
                token_activations: 12,
            },
        })
    }

    /// What one CPU worker of `threads` threads holds at its peak when its batches hold at
    /// most `batch_tokens` tokens: the weights, 128 MiB for the runtime, the tokenizer and the
    /// chunks it holds, and the activations of each batch in flight (one per thread, at most
    /// [`pool_encode_encoder::MAX_DEFAULT_CPU_CONCURRENT_BATCHES`]) with a quarter more for the allocator.
    ///
    /// Measured with `scripts/worker-memory.sh MODEL cpu:1 long --batch-size B` (peak
    /// `RssAnon`, texts past max_seq_length 256, so every batch is full; this estimate in
    /// brackets): all-MiniLM-L6-v2 (87 MiB of weights) at 16 / 32 / 64 / 96
    /// texts a batch: 147 / 205 / 257 / 330 MiB (259 / 305 / 395 / 485); a base-sized BERT
    /// (418 MiB): 538 / 650 / 750 / 894 MiB (636 / 726 / 906 / 1,086). Two threads at 32 texts:
    /// 231 and 710 MiB (395 and 906).
    pub fn worker_bytes(&self, threads: usize, batch_tokens: usize) -> u64 {
        let batches = default_concurrent_batches(Device::Cpu {
            threads: Some(threads),
        }) as u64;
        let activations = (batch_tokens as u64)
            .saturating_mul(self.token_activations)
            .saturating_mul(batches);
        (self.weights + 128 * MIB)
            .saturating_add(activations)
            .saturating_add(activations / 4)
    }
}

/// The most tokens one batch holds with these options when texts are cut to `max_seq_length`
/// tokens: `batch_size` texts of `max_seq_length` tokens, or fewer within `max_batch_tokens`
/// (which lets one text through however long it is).
pub fn batch_tokens(options: &EncodeOptions, max_seq_length: usize) -> usize {
    let full = options.batch_size.max(1).saturating_mul(max_seq_length);
    options
        .max_batch_tokens
        .map_or(full, |budget| full.min(budget.max(max_seq_length)))
}

/// The default CPU workers for `cores` cores and `available` bytes of memory (`None`: not
/// known): one single-threaded worker per core if the memory holds them, else as many as it
/// holds (at least one), the cores shared out between them.
pub fn plan_cpu_workers(
    cores: usize,
    available: Option<u64>,
    model: &ModelFootprint,
    batch_tokens: usize,
) -> Vec<Device> {
    let cores = cores.max(1);
    let fits = |workers: usize| {
        let threads = cores.div_ceil(workers);
        (workers as u64).saturating_mul(model.worker_bytes(threads, batch_tokens))
            <= budget(available)
    };
    let workers = (1..=cores).rev().find(|&w| fits(w)).unwrap_or(1);
    (0..workers)
        .map(|i| Device::Cpu {
            // The first `cores % workers` workers take one core more.
            threads: Some(cores / workers + usize::from(i < cores % workers)),
        })
        .collect()
}

/// What the CPU workers among `devices` need together, when it is more than `available`
/// memory leaves for them (`None`: they fit, or the memory is not known). `cores` sizes a plain
/// `cpu` device (it uses every core).
pub fn cpu_workers_shortfall(
    devices: &[Device],
    cores: usize,
    available: Option<u64>,
    model: &ModelFootprint,
    batch_tokens: usize,
) -> Option<u64> {
    let needed: u64 = devices
        .iter()
        .filter_map(|device| match *device {
            Device::Cpu { threads } => {
                Some(model.worker_bytes(threads.unwrap_or(cores), batch_tokens))
            }
            Device::Cuda(_) | Device::Wgpu(_) => None,
        })
        .sum();
    (needed > budget(available)).then_some(needed)
}

/// What the workers may take of `available` memory: room is left for the coordinator, the page
/// cache of the mapped weights and the rest of the system.
fn budget(available: Option<u64>) -> u64 {
    available.map_or(u64::MAX, |a| a / 10 * 8)
}

/// Memory this process may still use: the system's available memory, or what its cgroup's limit
/// leaves if that is less (a container's limit).
pub fn available_memory() -> Option<u64> {
    let system = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_available(&m));
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroup = cgroup_dirs(&cgroups).into_iter().find_map(|(dir, v2)| {
        let [limit, usage, stat] = if v2 {
            ["memory.max", "memory.current", "memory.stat"]
        } else {
            [
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "memory.stat",
            ]
        }
        .map(|file| std::fs::read_to_string(format!("{dir}/{file}")).ok());
        cgroup_left(&limit?, &usage?, stat.as_deref().unwrap_or(""))
    });
    match (system, cgroup) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The bytes a cgroup's limit leaves; `None` where there is no limit ("max" in cgroup v2, a
/// huge number in v1). Usage counts the page cache, whose inactive part (files read once, as an
/// input is) is reclaimed before anything is killed, so it is left out: the "working set"
/// Kubernetes evicts by.
fn cgroup_left(limit: &str, usage: &str, stat: &str) -> Option<u64> {
    let limit: u64 = limit.trim().parse().ok()?;
    let usage: u64 = usage.trim().parse().ok()?;
    let inactive_file = stat
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(key, _)| matches!(*key, "inactive_file" | "total_inactive_file"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    (limit < 1 << 60).then(|| limit.saturating_sub(usage.saturating_sub(inactive_file)))
}

/// The folders of this process's memory cgroups, `(dir, is v2)`, from `/proc/self/cgroup`: its
/// own (v2, v1's memory controller), then the roots a container sees as its own.
fn cgroup_dirs(proc_self_cgroup: &str) -> Vec<(String, bool)> {
    let mut dirs = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        let path = path.unwrap_or("").trim_end_matches('/');
        match controllers {
            Some("") => dirs.push((format!("/sys/fs/cgroup{path}"), true)),
            Some(c) if c.split(',').any(|c| c == "memory") => {
                dirs.push((format!("/sys/fs/cgroup/memory{path}"), false));
            }
            _ => {}
        }
    }
    dirs.push(("/sys/fs/cgroup".into(), true));
    dirs.push(("/sys/fs/cgroup/memory".into(), false));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const GIB: u64 = 1 << 30;

    fn threads(devices: &[Device]) -> Vec<usize> {
        devices
            .iter()
            .map(|d| match d {
                Device::Cpu { threads } => threads.unwrap(),
                other => panic!("{other}"),
            })
            .collect()
    }

    /// all-MiniLM-L6-v2 and a base-sized BERT, from their configs (hidden 384 / 768,
    /// intermediate 1536 / 3072) and weights files.
    const MINILM: ModelFootprint = ModelFootprint {
        weights: 90_852_864,
        token_activations: 4 * (2 * 384 + 1536),
    };
    const BASE: ModelFootprint = ModelFootprint {
        weights: 437_928_960,
        token_activations: 4 * (2 * 768 + 3072),
    };
    /// ST's default batch: 32 texts of up to 256 tokens.
    const BATCH: usize = 32 * 256;

    #[test]
    fn one_worker_per_core_when_memory_holds_them() {
        assert_eq!(
            threads(&plan_cpu_workers(16, Some(64 * GIB), &MINILM, BATCH)),
            [1; 16]
        );
        assert_eq!(threads(&plan_cpu_workers(16, None, &BASE, BATCH)), [1; 16]);
        assert_eq!(threads(&plan_cpu_workers(0, None, &MINILM, BATCH)), [1]);
    }

    #[test]
    fn fewer_workers_with_more_threads_when_memory_is_short() {
        // 8 GiB: 6.4 GiB to spend. 16 one-thread workers of 0.71 GiB do not fit, nor 8 of two
        // threads (0.88 GiB each) or 7 of three (1.06 GiB); 6 of three or two threads do.
        let plan = threads(&plan_cpu_workers(16, Some(8 * GIB), &BASE, BATCH));
        assert_eq!(plan.iter().sum::<usize>(), 16);
        let workers = plan.len() as u64;
        let budget = 8 * GIB / 10 * 8;
        assert!(workers * BASE.worker_bytes(plan[0], BATCH) <= budget);
        let threads_of_one_more = 16usize.div_ceil(plan.len() + 1);
        assert!((workers + 1) * BASE.worker_bytes(threads_of_one_more, BATCH) > budget);
        assert_eq!(plan, [3, 3, 3, 3, 2, 2]);
        // Less than one worker's worth: still one worker, with every core.
        assert_eq!(
            threads(&plan_cpu_workers(8, Some(GIB / 2), &BASE, BATCH)),
            [8]
        );
    }

    #[test]
    fn larger_batches_mean_fewer_workers() {
        let plan = |batch_tokens| plan_cpu_workers(16, Some(8 * GIB), &MINILM, batch_tokens).len();
        // 32 texts of 256 tokens: 16 workers of 0.30 GiB fit in 6.4 GiB.
        assert_eq!(plan(BATCH), 16);
        // 64 texts of 512 tokens: 0.56 GiB a one-thread worker; 4 of four threads (four
        // batches in flight each) need 6.5 GiB, 3 need 4.8 GiB.
        assert_eq!(plan(64 * 512), 3);
        // 128 texts of 512 tokens: 0.91 GiB a one-thread worker, 3.0 GiB with four threads.
        assert_eq!(plan(128 * 512), 2);
    }

    /// The estimate stays above what was measured (see [`ModelFootprint::worker_bytes`]).
    #[test]
    fn estimates_cover_the_measured_workers() {
        for (model, threads, batch, measured_mib) in [
            (MINILM, 1, 16, 147),
            (MINILM, 1, 32, 205),
            (MINILM, 1, 64, 257),
            (MINILM, 1, 96, 330),
            (MINILM, 2, 32, 231),
            (BASE, 1, 16, 538),
            (BASE, 1, 32, 650),
            (BASE, 1, 64, 750),
            (BASE, 1, 96, 894),
            (BASE, 2, 32, 710),
        ] {
            let estimate = model.worker_bytes(threads, batch * 256);
            assert!(
                estimate > measured_mib * MIB,
                "{model:?}, {threads} threads, {batch} texts: {} MiB",
                estimate / MIB
            );
        }
    }

    #[test]
    fn batch_tokens_follow_the_batch_size_and_the_token_budget() {
        let options = |batch_size, max_batch_tokens| EncodeOptions {
            batch_size,
            max_batch_tokens,
            ..EncodeOptions::default()
        };
        assert_eq!(batch_tokens(&options(32, None), 256), 8192);
        assert_eq!(batch_tokens(&options(32, Some(4096)), 256), 4096);
        assert_eq!(batch_tokens(&options(32, Some(100_000)), 256), 8192);
        // A budget below one text still lets a text of max_seq_length through.
        assert_eq!(batch_tokens(&options(32, Some(10)), 256), 256);
    }

    #[test]
    fn explicit_cpu_workers_that_do_not_fit_are_found() {
        let devices: Vec<Device> = ["cpu:1", "cpu:1", "cpu:2", "cuda:0"]
            .map(|d| d.parse().unwrap())
            .to_vec();
        let needed = 2 * BASE.worker_bytes(1, BATCH) + BASE.worker_bytes(2, BATCH);
        let short = cpu_workers_shortfall(&devices, 16, Some(2 * GIB), &BASE, BATCH);
        assert_eq!(short, Some(needed));
        assert_eq!(
            cpu_workers_shortfall(&devices, 16, Some(16 * GIB), &BASE, BATCH),
            None
        );
        assert_eq!(
            cpu_workers_shortfall(&devices, 16, None, &BASE, BATCH),
            None
        );
        // A plain `cpu` worker uses every core: four batches in flight.
        let cpu: Vec<Device> = vec!["cpu".parse().unwrap()];
        assert_eq!(
            cpu_workers_shortfall(&cpu, 16, Some(GIB), &BASE, BATCH),
            Some(BASE.worker_bytes(4, BATCH))
        );
    }

    #[test]
    fn footprints_are_read_from_the_model_folder() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/models");
        let tiny = models.join("bert-mean-normalize-old");
        let file = std::fs::metadata(tiny.join("model.safetensors"))
            .unwrap()
            .len();
        let folder = ModelFolder::load(&tiny).unwrap();
        let footprint = ModelFootprint::of(&folder).unwrap();
        // All float32: the tensors' bytes, i.e. the file less its header (and int64 ids).
        let bytes = footprint.weights;
        assert!(bytes > file * 9 / 10 && bytes < file, "{bytes} of {file}");
        let shape = folder.transformer().unwrap().architecture.shape();
        assert_eq!(
            footprint.token_activations,
            4 * (2 * shape.hidden_size + shape.intermediate_size) as u64
        );
        // ModernBERT's gated block holds its input and gate halves and their product.
        let folder = ModelFolder::load(&models.join("modernbert-mean-normalize-new")).unwrap();
        let shape = folder.transformer().unwrap().architecture.shape();
        assert_eq!(
            ModelFootprint::of(&folder).unwrap().token_activations,
            4 * (2 * shape.hidden_size + 3 * shape.intermediate_size) as u64
        );
        // A model2vec table: its f16 rows are fewer than the tokens that its mapping sends to
        // them; loaded, every token has a float32 row.
        let folder = ModelFolder::load(&models.join("static-model2vec-bpe-old")).unwrap();
        let InputModule::Static(table) = &folder.input else {
            panic!("a StaticEmbedding model")
        };
        let loaded = StaticEmbedding::load(table).unwrap();
        let footprint = ModelFootprint::of(&folder).unwrap();
        assert_eq!(
            footprint.weights,
            4 * (loaded.vocab_size() * loaded.dimension()) as u64
        );
        assert!(footprint.weights > 3 * file_len(&folder.weights_path()));
        assert_eq!(footprint.token_activations, 12);
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn memory_files_are_read() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_available(meminfo), Some(2048 * 1024));
        assert_eq!(meminfo_available("MemTotal: 1 kB\n"), None);
        let stat = "active_anon 5\ninactive_file 536870912\nactive_file 7\n";
        assert_eq!(
            cgroup_left("4294967296\n", "1073741824\n", ""),
            Some(3 * GIB)
        );
        assert_eq!(
            cgroup_left("4294967296\n", "1073741824\n", stat),
            Some(3 * GIB + GIB / 2)
        );
        let v1_stat = "cache 9\ntotal_inactive_file 1073741824\n";
        assert_eq!(
            cgroup_left("4294967296", "2147483648", v1_stat),
            Some(3 * GIB)
        );
        assert_eq!(cgroup_left("max\n", "1073741824\n", ""), None);
        assert_eq!(cgroup_left("9223372036854771712\n", "1\n", ""), None);
        assert_eq!(cgroup_left("100\n", "200\n", ""), Some(0));
        assert_eq!(
            cgroup_dirs("4:memory:/jobs/a\n3:cpu,cpuacct:/\n0::/user.slice/x.scope\n"),
            [
                ("/sys/fs/cgroup/memory/jobs/a".to_string(), false),
                ("/sys/fs/cgroup/user.slice/x.scope".to_string(), true),
                ("/sys/fs/cgroup".to_string(), true),
                ("/sys/fs/cgroup/memory".to_string(), false),
            ]
        );
        // On this machine: a number, and no more than the system has.
        let available = available_memory().expect("Linux has /proc/meminfo");
        assert!(available > 0);
    }
}
