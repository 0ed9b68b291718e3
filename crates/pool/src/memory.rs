//! How many CPU workers the memory holds. Each worker process loads its own copy of the model,
//! so one single-threaded worker per core (the fastest default) can need more memory than a
//! large machine, or a container's limit, has: 64 workers of a base-sized model want ~60 GiB.
//! A worker the kernel kills for memory would be replaced and its chunk retried, and in the end
//! its texts blamed for it; so the default takes fewer workers with more threads each instead.

use std::path::Path;

use pool_encode_encoder::Device;

const MIB: u64 = 1 << 20;

/// What one CPU worker of `threads` threads holds at its peak, for a model of `weights` bytes
/// as float32, at the default batch size. Measured with `scripts/worker-memory.sh` (peak
/// `RssAnon` of a worker encoding tests/data/texts.jsonl, long texts included) on
/// all-MiniLM-L6-v2 (90 MB) and a base-sized BERT (438 MB): 206 and 651 MiB with one thread,
/// 237 and 838 MiB with two (a second batch in flight); this gives 257, 755, 300 and 964 MiB.
/// The weights file itself is mapped, and its pages are shared between the workers. Each
/// further batch in flight (at most 4) adds activations that grow with the model.
pub fn worker_bytes(weights: u64, threads: usize) -> u64 {
    let batches = threads.clamp(1, 4) as u64;
    3 * weights / 2 + 128 * MIB + (batches - 1) * weights / 2
}

/// The default CPU workers for `cores` cores and `available` bytes of memory (`None`: not
/// known): one single-threaded worker per core if the memory holds them, else as many as it
/// holds (at least one), the cores shared out between them.
pub fn plan_cpu_workers(cores: usize, available: Option<u64>, weights: u64) -> Vec<Device> {
    let cores = cores.max(1);
    // Room for the coordinator, the page cache of the mapped weights and the rest of the system.
    let budget = available.map_or(u64::MAX, |a| a / 10 * 8);
    let fits = |workers: usize| {
        let threads = cores.div_ceil(workers);
        (workers as u64).saturating_mul(worker_bytes(weights, threads)) <= budget
    };
    let workers = (1..=cores).rev().find(|&w| fits(w)).unwrap_or(1);
    (0..workers)
        .map(|i| Device::Cpu {
            // The first `cores % workers` workers take one core more.
            threads: Some(cores / workers + usize::from(i < cores % workers)),
        })
        .collect()
}

/// Bytes of the model's weights as float32 (the dtype they are computed in on the CPU), from its
/// safetensors headers; `None` if the folder cannot be read (the worker will say why).
pub fn model_weights_bytes(model: &Path) -> Option<u64> {
    let folder = pool_encode_encoder::model::ModelFolder::load(model).ok()?;
    let weights =
        pool_encode_encoder::model::weights::Weights::open(&folder.weights_path(), "").ok()?;
    Some(weights.f32_bytes())
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

    #[test]
    fn one_worker_per_core_when_memory_holds_them() {
        let minilm = 90_000_000;
        assert_eq!(
            threads(&plan_cpu_workers(16, Some(64 * GIB), minilm)),
            [1; 16]
        );
        assert_eq!(threads(&plan_cpu_workers(16, None, 438_000_000)), [1; 16]);
        assert_eq!(threads(&plan_cpu_workers(0, None, minilm)), [1]);
    }

    #[test]
    fn fewer_workers_with_more_threads_when_memory_is_short() {
        let base = 438_000_000;
        // 8 GiB: 6.9 GB to spend. 16 one-thread workers of 0.79 GB do not fit, nor 8 of two
        // threads (1.01 GB each), 6 of three (1.23 GB) or 5 of four (1.45 GB); 4 of four do.
        let plan = threads(&plan_cpu_workers(16, Some(8 * GIB), base));
        assert_eq!(plan.iter().sum::<usize>(), 16);
        let workers = plan.len() as u64;
        assert!(workers * worker_bytes(base, plan[0]) <= 8 * GIB / 10 * 8);
        assert!(
            (workers + 1) * worker_bytes(base, 16usize.div_ceil(plan.len() + 1)) > 8 * GIB / 10 * 8
        );
        assert_eq!(plan, [4, 4, 4, 4]);
        // Less than one worker's worth: still one worker, with every core.
        assert_eq!(threads(&plan_cpu_workers(8, Some(GIB / 2), base)), [8]);
    }

    /// The estimate stays above what was measured (see [`worker_bytes`]).
    #[test]
    fn estimates_cover_the_measured_workers() {
        let (minilm, base) = (90_000_000, 438_000_000);
        for (weights, threads, measured_mib) in [
            (minilm, 1, 206),
            (base, 1, 651),
            (minilm, 2, 237),
            (base, 2, 838),
        ] {
            assert!(worker_bytes(weights, threads) > measured_mib * MIB);
        }
    }

    #[test]
    fn weights_are_counted_from_the_model_folder() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/models");
        let tiny = models.join("bert-mean-normalize-old");
        let file = std::fs::metadata(tiny.join("model.safetensors"))
            .unwrap()
            .len();
        let bytes = model_weights_bytes(&tiny).unwrap();
        // All float32: the tensors' bytes, i.e. the file less its header (and int64 ids).
        assert!(bytes > file * 9 / 10 && bytes < file, "{bytes} of {file}");
        assert_eq!(model_weights_bytes(&models.join("no-such-model")), None);
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
