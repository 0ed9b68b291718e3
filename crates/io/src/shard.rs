//! One input split across machines. Shard `I` of `N` encodes a contiguous range of the input's
//! records into its own output, `<stem>-IIIII-of-NNNNN.<ext>`, and when that is complete writes
//! a manifest next to it (`<shard output>.manifest.json`: its records, rows, bytes, SHA-256 and
//! settings). [`merge`] checks every shard's manifest against the others and against its file,
//! then joins the outputs in shard order into one file equal to a single run's.
//!
//! `--shard auto` takes the index from the scheduler: a Kubernetes Indexed Job's
//! `JOB_COMPLETION_INDEX`, or a Slurm array's `SLURM_ARRAY_TASK_ID` (less
//! `SLURM_ARRAY_TASK_MIN`) with `SLURM_ARRAY_TASK_COUNT` shards.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dense::{ValueType, partial_path};
use crate::error::{IoError, Result};
use crate::output::OutputFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based.
    pub index: u32,
    pub count: u32,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// `I/N` (0 ≤ I < N), `auto` (index and count from a Slurm array, or the index from a
    /// Kubernetes Indexed Job, which then needs `auto/N`), or `auto/N`.
    pub fn parse(spec: &str) -> std::result::Result<Shard, String> {
        Self::parse_with_env(spec, |name| std::env::var(name).ok())
    }

    fn parse_with_env(
        spec: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Shard, String> {
        let usage = || format!("--shard must be I/N (0 ≤ I < N), auto or auto/N, not {spec:?}");
        let (index, count) = spec.split_once('/').unwrap_or((spec, ""));
        let count: Option<u32> = match count {
            "" if index == "auto" => None,
            "" => return Err(usage()),
            n => Some(n.trim().parse().map_err(|_| usage())?),
        };
        let number = |name: &str| -> std::result::Result<Option<u32>, String> {
            env(name)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| format!("--shard auto: {name}={v:?} is not a number"))
                })
                .transpose()
        };
        let shard = if index.trim() != "auto" {
            let count = count.ok_or_else(usage)?;
            Shard {
                index: index.trim().parse().map_err(|_| usage())?,
                count,
            }
        } else if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = count.ok_or_else(|| {
                "--shard auto: a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) does not tell the shard count; use --shard auto/N with N = the Job's completions".to_string()
            })?;
            Shard { index, count }
        } else if let Some(task) = number("SLURM_ARRAY_TASK_ID")? {
            let first = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let count = match count {
                Some(n) => n,
                None => number("SLURM_ARRAY_TASK_COUNT")?
                    .ok_or("--shard auto: SLURM_ARRAY_TASK_COUNT is not set; use --shard auto/N")?,
            };
            Shard {
                index: task
                    .checked_sub(first)
                    .ok_or("--shard auto: SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?,
                count,
            }
        } else {
            return Err("--shard auto: neither JOB_COMPLETION_INDEX (Kubernetes Indexed Job) nor SLURM_ARRAY_TASK_ID (Slurm array) is set".into());
        };
        if shard.count == 0 || shard.index >= shard.count {
            return Err(format!(
                "shard {shard} does not exist: the index must be below the count (a Slurm array must be contiguous, without a step)"
            ));
        }
        Ok(shard)
    }

    /// The records of an input of `records` records this shard encodes: contiguous, the shards
    /// together cover every record once, sizes differ by at most one.
    pub fn range(&self, records: u64) -> Range<u64> {
        let at = |i: u32| (records as u128 * i as u128 / self.count as u128) as u64;
        at(self.index)..at(self.index + 1)
    }

    /// This shard's output for the run's `output`: `dir/emb.npy` → `dir/emb-00002-of-00004.npy`.
    pub fn output_path(&self, output: &Path) -> PathBuf {
        let stem = output.file_stem().unwrap_or_default().to_string_lossy();
        let name = match output.extension() {
            Some(ext) => format!(
                "{stem}-{:05}-of-{:05}.{}",
                self.index,
                self.count,
                ext.to_string_lossy()
            ),
            None => format!("{stem}-{:05}-of-{:05}", self.index, self.count),
        };
        output.with_file_name(name)
    }
}

/// What a complete shard leaves next to its output for [`merge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    pub shard: Shard,
    /// Records in the whole input.
    pub input_records: u64,
    /// The input records this shard covered.
    pub records: Range<u64>,
    /// Rows in its output (records less rejected ones).
    pub rows: u64,
    pub rejected: u64,
    pub format: OutputFormat,
    pub dimension: usize,
    /// Dense outputs: float32, or the bytes of quantized embeddings.
    #[serde(default)]
    pub values: ValueType,
    /// The output's file name (it sits next to the manifest) and size.
    pub output: String,
    pub bytes: u64,
    pub sha256: String,
    /// Model and settings the rows depend on: every shard's must be the same.
    pub settings: serde_json::Value,
}

pub fn manifest_path(shard_output: &Path) -> PathBuf {
    let mut name = shard_output.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    shard_output.with_file_name(name)
}

impl ShardManifest {
    /// Written atomically (aside, synced, renamed) once the shard's output is complete.
    pub fn save(&self, shard_output: &Path) -> Result<PathBuf> {
        let path = manifest_path(shard_output);
        let temporary = partial_path(&path);
        let write = || -> std::io::Result<()> {
            let file = File::create(&temporary)?;
            serde_json::to_writer_pretty(&file, self)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        };
        write().map_err(IoError::io(&path))?;
        Ok(path)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(IoError::io(path))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            IoError::format(path, format!("not a shard manifest pool-encode wrote: {e}"))
        })
    }
}

/// SHA-256 of a file, as lowercase hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(IoError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(IoError::io(path))?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`merge`] assembled.
#[derive(Debug, Clone)]
pub struct Merged {
    pub output: PathBuf,
    pub shards: u32,
    pub rows: u64,
    pub rejected: u64,
    pub sha256: String,
}

/// Finds the shards of `output` (`<stem>-IIIII-of-NNNNN.<ext>` and their manifests), checks
/// that all are complete and agree (counts, ranges, model, settings, sizes, checksums), and
/// joins them in shard order into `output` (written under `.partial`, renamed at the end).
pub fn merge(output: &Path, overwrite: bool) -> Result<Merged> {
    if output.exists() && !overwrite {
        return Err(IoError::format(
            output,
            "output exists (pass --overwrite to replace it)",
        ));
    }
    let count = shard_count(output)?;
    let mut manifests = Vec::with_capacity(count as usize);
    for index in 0..count {
        let shard = Shard { index, count };
        let shard_output = shard.output_path(output);
        let path = manifest_path(&shard_output);
        if !path.exists() {
            let state = if partial_path(&shard_output).exists() {
                "is not finished (its partial output is there: run it again with --resume)"
            } else {
                "has not run (no output)"
            };
            return Err(IoError::format(
                &path,
                format!("shard {shard} {state}; merge needs every shard complete"),
            ));
        }
        let manifest = ShardManifest::load(&path)?;
        check_manifest(&path, &manifest, shard, manifests.first(), manifests.last())?;
        manifests.push(manifest);
    }
    let first = &manifests[0];
    let last = manifests.last().expect("at least one shard");
    if last.records.end != first.input_records {
        return Err(IoError::format(
            &manifest_path(&last.shard.output_path(output)),
            format!(
                "the shards end at record {}, the input has {}",
                last.records.end, first.input_records
            ),
        ));
    }
    if output.extension().and_then(|e| e.to_str()) != Some(first.format.extension()) {
        return Err(IoError::format(
            output,
            format!(
                "the shards are .{} files: give the merged output the same extension",
                first.format.extension()
            ),
        ));
    }
    if let Some(rows_kind) = first.format.parquet(first.dimension, first.values) {
        // Parquet files are not concatenated byte-wise: each shard is checked, then its rows
        // are written again into one file.
        let parts: Vec<PathBuf> = manifests
            .iter()
            .map(|m| m.shard.output_path(output))
            .collect();
        for (manifest, part) in manifests.iter().zip(&parts) {
            check_file(part, manifest, file_sha256(part)?)?;
        }
        let partial = partial_path(output);
        crate::parquet::concatenate(&parts, &partial, rows_kind)?;
        let sha256 = file_sha256(&partial)?;
        std::fs::rename(&partial, output).map_err(IoError::io(output))?;
        return Ok(Merged {
            output: output.to_path_buf(),
            shards: count,
            rows: manifests.iter().map(|m| m.rows).sum(),
            rejected: manifests.iter().map(|m| m.rejected).sum(),
            sha256,
        });
    }

    let rows: u64 = manifests.iter().map(|m| m.rows).sum();
    let partial = partial_path(output);
    let mut file = BufWriter::new(File::create(&partial).map_err(IoError::io(&partial))?);
    let mut merged_hash = Sha256::new();
    let header = first.format.header(rows, first.dimension, first.values);
    merged_hash.update(&header);
    file.write_all(&header).map_err(IoError::io(&partial))?;
    let skip = first.format.header_len();
    let mut buffer = vec![0u8; 1 << 20];
    for manifest in &manifests {
        let shard_output = manifest.shard.output_path(output);
        let mut input = File::open(&shard_output).map_err(IoError::io(&shard_output))?;
        let mut hasher = Sha256::new();
        let mut at = 0u64;
        loop {
            let n = input
                .read(&mut buffer)
                .map_err(IoError::io(&shard_output))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            // The shard's own header is replaced by the merged one.
            let from = skip.saturating_sub(at).min(n as u64) as usize;
            at += n as u64;
            merged_hash.update(&buffer[from..n]);
            file.write_all(&buffer[from..n])
                .map_err(IoError::io(&partial))?;
        }
        if let Err(e) = check_file(&shard_output, manifest, hex(&hasher.finalize())) {
            drop(file);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    }
    file.flush().map_err(IoError::io(&partial))?;
    file.get_ref().sync_all().map_err(IoError::io(&partial))?;
    drop(file);
    std::fs::rename(&partial, output).map_err(IoError::io(output))?;
    Ok(Merged {
        output: output.to_path_buf(),
        shards: count,
        rows,
        rejected: manifests.iter().map(|m| m.rejected).sum(),
        sha256: hex(&merged_hash.finalize()),
    })
}

/// A shard's file against its manifest: size, and the SHA-256 computed over it.
fn check_file(path: &Path, manifest: &ShardManifest, sha256: String) -> Result<()> {
    let size = std::fs::metadata(path).map_err(IoError::io(path))?.len();
    if size != manifest.bytes {
        return Err(IoError::format(
            path,
            format!("holds {size} bytes, its manifest says {}", manifest.bytes),
        ));
    }
    if sha256 != manifest.sha256 {
        return Err(IoError::format(
            path,
            format!(
                "SHA-256 {sha256} differs from its manifest's {}: the file changed or is damaged; run the shard again",
                manifest.sha256
            ),
        ));
    }
    Ok(())
}

/// The `N` of the `<stem>-IIIII-of-NNNNN.<ext>.manifest.json` files next to `output`.
fn shard_count(output: &Path) -> Result<u32> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let probe = Shard { index: 0, count: 1 }.output_path(output);
    let probe = manifest_path(&probe);
    let name = probe.file_name().unwrap_or_default().to_string_lossy();
    let (prefix, suffix) = name.split_once("00000-of-00001").expect("the pattern");
    let mut counts = std::collections::BTreeSet::new();
    // A folder that does not exist holds no shards (reported below).
    let entries = std::fs::read_dir(dir).into_iter().flatten();
    for entry in entries {
        let entry = entry.map_err(IoError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let middle = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix));
        if let Some((_, count)) = middle.and_then(|m| m.split_once("-of-"))
            && let Ok(count) = count.parse::<u32>()
        {
            counts.insert(count);
        }
    }
    match counts.len() {
        1 => Ok(*counts.first().expect("one")),
        0 => Err(IoError::format(
            output,
            format!(
                "no shard manifests found next to it (expected {prefix}IIIII-of-NNNNN{suffix})"
            ),
        )),
        _ => Err(IoError::format(
            output,
            format!(
                "shards of different runs are next to it (shard counts {counts:?}): remove the stale ones"
            ),
        )),
    }
}

fn check_manifest(
    path: &Path,
    manifest: &ShardManifest,
    shard: Shard,
    first: Option<&ShardManifest>,
    previous: Option<&ShardManifest>,
) -> Result<()> {
    let fail = |message: String| Err(IoError::format(path, message));
    if manifest.shard != shard {
        return fail(format!(
            "is the manifest of shard {}, not {shard}",
            manifest.shard
        ));
    }
    let expected_start = previous.map_or(0, |p| p.records.end);
    if manifest.records.start != expected_start {
        return fail(format!(
            "covers records {:?}, but the previous shard ends at record {expected_start}",
            manifest.records
        ));
    }
    if manifest.rows + manifest.rejected != manifest.records.end - manifest.records.start {
        return fail(format!(
            "{} rows and {} rejected records do not make its {} records",
            manifest.rows,
            manifest.rejected,
            manifest.records.end - manifest.records.start
        ));
    }
    if let Some(first) = first {
        let differs = |what: &str, a: String, b: String| {
            fail(format!(
                "{what} is {a} here but {b} in shard {}: the shards come from different runs",
                first.shard
            ))
        };
        if manifest.input_records != first.input_records {
            return differs(
                "the input's record count",
                manifest.input_records.to_string(),
                first.input_records.to_string(),
            );
        }
        let shape = |m: &ShardManifest| (m.format, m.dimension, m.values);
        if shape(manifest) != shape(first) {
            let describe =
                |m: &ShardManifest| format!("{:?} × {} {:?}", m.format, m.dimension, m.values);
            return differs("the output format", describe(manifest), describe(first));
        }
        if manifest.settings != first.settings {
            let keys: Vec<&String> = manifest
                .settings
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| first.settings.get(k.as_str()) != Some(v))
                .map(|(k, _)| k)
                .collect();
            return differs(
                "the settings",
                format!("different ({keys:?})"),
                "others".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn shard_specs_from_flags_kubernetes_and_slurm() {
        let none = env(&[]);
        assert_eq!(
            Shard::parse_with_env("2/4", &none),
            Ok(Shard { index: 2, count: 4 })
        );
        for bad in ["4/4", "2", "a/b", "1/0", "auto"] {
            assert!(Shard::parse_with_env(bad, &none).is_err(), "{bad}");
        }
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        assert_eq!(
            Shard::parse_with_env("auto/5", &k8s),
            Ok(Shard { index: 3, count: 5 })
        );
        let err = Shard::parse_with_env("auto", &k8s).unwrap_err();
        assert!(err.contains("auto/N"), "{err}");
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            Shard::parse_with_env("auto", &slurm),
            Ok(Shard { index: 3, count: 4 })
        );
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert!(Shard::parse_with_env("auto", &stepped).is_err());
    }

    #[test]
    fn ranges_cover_every_record_once() {
        for records in [0u64, 1, 2, 7, 100, 1001] {
            for count in 1..=5 {
                let ranges: Vec<Range<u64>> = (0..count)
                    .map(|index| Shard { index, count }.range(records))
                    .collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges.last().unwrap().end, records);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let sizes: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn shard_output_names() {
        let shard = Shard { index: 2, count: 4 };
        assert_eq!(
            shard.output_path(Path::new("out/emb.npy")),
            Path::new("out/emb-00002-of-00004.npy")
        );
        assert_eq!(
            shard.output_path(Path::new("sparse.jsonl")),
            Path::new("sparse-00002-of-00004.jsonl")
        );
    }
}
