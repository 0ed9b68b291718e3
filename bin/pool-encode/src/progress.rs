//! What a person watching a long run sees: on a terminal, one status line with a bar, redrawn
//! every second; otherwise (a log file, a scheduler's output) a plain line every
//! `--progress-interval` seconds.
//!
//! `pool-encode: 12,345 of ~50,000 texts (24.7%), 850 texts/s, 36,100 tokens/s, ETA 44s | cpu:1 425/s, cpu:1 425/s`
//!
//! Counts are texts encoded by the workers; rates are over the last interval; the ETA uses the
//! average since the pool was ready. The total is extrapolated from how far the reader is
//! through its file (exact once it reaches the end).

use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use pool_encode_io::InputPosition;
use pool_encode_pool::{Pool, WorkerStats};

/// Where the figures come from.
pub struct Sources<'a> {
    pub pool: &'a Pool,
    pub input: InputPosition,
    /// When the pool was ready: the start of the rate the ETA uses.
    pub since: Instant,
    /// Texts this run will encode, when known beforehand (a shard's range).
    pub total: Option<u64>,
    /// Records the reader skipped before this run's first (a resumed run's, a shard's start).
    pub skipped: u64,
}

impl Sources<'_> {
    /// Texts this run encodes in all: exact for a shard, else extrapolated from how far the
    /// reader is through its file.
    fn total(&self) -> Option<u64> {
        self.total.or_else(|| {
            self.input
                .estimated_records()
                .map(|t| t.saturating_sub(self.skipped))
        })
    }
}

/// Reports until `stop` receives or disconnects. `terminal`: redraw one line every second.
pub fn report_until(sources: Sources, interval: Duration, terminal: bool, stop: Receiver<()>) {
    let interval = if terminal {
        Duration::from_secs(1)
    } else {
        interval
    };
    let mut last = Snapshot::take(&sources);
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        let now = Snapshot::take(&sources);
        let mut line = describe(&sources, &last, &now);
        if terminal && let Some(total) = sources.total() {
            line = format!("{} {line}", bar(now.done, total));
        }
        let mut stderr = std::io::stderr().lock();
        let _ = if terminal {
            // Clear the line, then draw it again without a newline.
            write!(stderr, "\r\x1b[2K{line}")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
        last = now;
    }
    if terminal {
        // Leave the last line drawn, and what follows on a line of its own.
        eprintln!();
    }
}

struct Snapshot {
    at: Instant,
    /// Texts encoded so far (the output lags by up to one length-sorted window).
    done: u64,
    workers: Vec<WorkerStats>,
}

impl Snapshot {
    fn take(sources: &Sources) -> Self {
        let workers = sources.pool.worker_stats();
        Snapshot {
            at: Instant::now(),
            done: workers.iter().map(|w| w.texts).sum(),
            workers,
        }
    }

    fn tokens(&self) -> u64 {
        self.workers.iter().map(|w| w.tokens).sum()
    }
}

fn describe(sources: &Sources, last: &Snapshot, now: &Snapshot) -> String {
    let seconds = (now.at - last.at).as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
    let mut line = format!("pool-encode: {} ", thousands(now.done));
    match sources.total() {
        Some(total) => {
            let total = total.max(now.done);
            let share = 100.0 * now.done as f64 / total.max(1) as f64;
            line += &format!("of ~{} texts ({share:.1}%)", thousands(total));
            let average = now.done as f64 / (now.at - sources.since).as_secs_f64().max(1e-9);
            if average > 0.0 && total > now.done {
                line += &format!(", ETA {}", duration((total - now.done) as f64 / average));
            }
        }
        None => line += "texts",
    }
    line += &format!(
        ", {} texts/s, {} tokens/s |",
        thousands(rate(last.done, now.done) as u64),
        thousands(rate(last.tokens(), now.tokens()) as u64)
    );
    for (before, worker) in last.workers.iter().zip(&now.workers) {
        line += &format!(
            " {} {}/s",
            worker.device,
            thousands(rate(before.texts, worker.texts) as u64)
        );
    }
    line
}

/// `[#########...........]`: `done` of `total` in 20 cells.
fn bar(done: u64, total: u64) -> String {
    let cells = (20 * done.min(total) / total.max(1)) as usize;
    format!("[{}{}]", "#".repeat(cells), ".".repeat(20 - cells))
}

/// 12345678 → "12,345,678".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds → "44s", "12m05s", "3h07m".
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_easily() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12345678), "12,345,678");
        assert_eq!(duration(44.4), "44s");
        assert_eq!(duration(725.0), "12m05s");
        assert_eq!(duration(11220.0), "3h07m");
        assert_eq!(bar(5, 20), "[#####...............]");
        assert_eq!(bar(30, 20), "[####################]");
    }
}
