//! Streaming text input: records are read one line at a time, so memory does not grow with the
//! file. Every error names the file, the line, and for JSON the field.
//!
//! - `.jsonl`: one JSON object a line; the text in `text_field` (default `text`), an optional id
//!   in `id_field`. Blank lines are skipped.
//! - `.txt`: one text a line (an empty line is an empty text); `\r\n` endings are accepted.
//! - `.parquet`: the text in the string column `text_field`, the id in `id_field`; a batch of
//!   rows read at a time. Errors give the 1-based row where other formats give the line.
//!
//! A record longer than [`InputOptions::max_record_bytes`] (16 MiB unless told) is a bad record,
//! read past without keeping it: a file with no line breaks fails at its first line instead of
//! filling memory, and a model reads a few KB of a text at most anyway.
//!
//! `.jsonl` and `.txt` may be compressed, named `.jsonl.gz` / `.txt.gz` (gzip, several members
//! allowed, as `pigz` and `bgzip` write) or `.jsonl.zst` / `.txt.zst` (zstd): big corpora are
//! shipped that way, and they are read as they are decompressed, never unpacked to disk.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::error::{IoError, Result};
use crate::parquet::ParquetTexts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// From `id_field`, else the record's 0-based index in the input.
    pub id: String,
    pub text: String,
    /// 1-based line number in the input file.
    pub line: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jsonl,
    Txt,
    Parquet,
}

enum Source {
    Lines {
        reader: BufReader<Box<dyn Read + Send>>,
        /// Decompressed as read: errors are about the compressed stream, and progress counts
        /// the compressed bytes under the decoder (the file's size is in those).
        compression: Option<Compression>,
    },
    Parquet(Box<ParquetTexts>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// `file` decompressed as it is read, the compressed bytes read counted in `bytes`. Both
    /// decoders buffer what they read from the file.
    fn decoder(self, file: File, bytes: Arc<AtomicU64>) -> std::io::Result<Box<dyn Read + Send>> {
        let counted = CountingReader { file, bytes };
        Ok(match self {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(counted)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(counted)?),
        })
    }
}

/// Counts the bytes read from the file, under a decoder.
struct CountingReader {
    file: File,
    bytes: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// [`InputOptions::max_record_bytes`] unless told.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct InputOptions {
    pub text_field: String,
    pub id_field: Option<String>,
    /// The longest record accepted: a line (its ending not counted) or a Parquet text, in bytes.
    pub max_record_bytes: usize,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            text_field: "text".into(),
            id_field: None,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

pub struct InputReader {
    path: PathBuf,
    kind: Kind,
    source: Source,
    options: InputOptions,
    line: u64,
    index: u64,
    buffer: Vec<u8>,
    position: InputPosition,
    /// A read failed (not a record: the file or its compressed stream). Nothing after it can
    /// be read, so the reader ends after that error instead of repeating it.
    unreadable: bool,
    /// The line `advance` passed over was longer than the limit (its length, ending included,
    /// as far as counted): a bad record.
    too_long: Option<u64>,
}

/// How far a reader has got, readable from another thread while the reader is consumed
/// elsewhere (a progress display estimates the total from it).
#[derive(Debug, Clone)]
pub struct InputPosition {
    /// Bytes of the file read so far (rows for Parquet).
    bytes: Arc<AtomicU64>,
    /// Records returned so far.
    records: Arc<AtomicU64>,
    /// The file's size when it was opened (its rows for Parquet).
    pub file_bytes: u64,
}

impl InputPosition {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Records in the whole file, extrapolated from those read so far (exact at the end).
    pub fn estimated_records(&self) -> Option<u64> {
        let (bytes, records) = (self.bytes(), self.records());
        (bytes > 0 && records > 0)
            .then(|| (records as f64 * self.file_bytes.max(bytes) as f64 / bytes as f64) as u64)
    }
}

impl InputReader {
    pub fn open(path: &Path, options: InputOptions) -> Result<Self> {
        fn extension(path: &Path) -> Option<&str> {
            path.extension().and_then(|e| e.to_str())
        }
        let compression = match extension(path) {
            Some("gz") => Some(Compression::Gzip),
            Some("zst") => Some(Compression::Zstd),
            _ => None,
        };
        // `in.jsonl.gz` holds an `in.jsonl`.
        let inner = match compression {
            Some(_) => Path::new(path.file_stem().unwrap_or_default()),
            None => path,
        };
        let kind = match extension(inner) {
            Some("jsonl") | Some("ndjson") => Kind::Jsonl,
            Some("txt") => Kind::Txt,
            Some("parquet") if compression.is_none() => Kind::Parquet,
            _ => {
                return Err(IoError::format(
                    path,
                    "unsupported input extension (expected .jsonl, .txt or .parquet; .jsonl and \
                     .txt may be compressed: .jsonl.gz, .jsonl.zst, .txt.gz, .txt.zst)",
                ));
            }
        };
        let bytes_read = Arc::<AtomicU64>::default();
        let (source, file_bytes) = if kind == Kind::Parquet {
            let texts =
                ParquetTexts::open(path, &options.text_field, options.id_field.as_deref(), 0)?;
            let rows = texts.rows;
            (Source::Parquet(Box::new(texts)), rows)
        } else {
            let file = File::open(path).map_err(IoError::io(path))?;
            let bytes = file.metadata().map_err(IoError::io(path))?.len();
            let stream: Box<dyn Read + Send> = match compression {
                None => Box::new(file),
                Some(compression) => compression
                    .decoder(file, bytes_read.clone())
                    .map_err(IoError::io(path))?,
            };
            let reader = BufReader::with_capacity(1 << 20, stream);
            (
                Source::Lines {
                    reader,
                    compression,
                },
                bytes,
            )
        };
        Ok(InputReader {
            path: path.to_path_buf(),
            kind,
            source,
            options,
            line: 0,
            index: 0,
            buffer: Vec::new(),
            position: InputPosition {
                bytes: bytes_read,
                records: Arc::default(),
                file_bytes,
            },
            unreadable: false,
            too_long: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle on this reader's progress through its file.
    pub fn position(&self) -> InputPosition {
        self.position.clone()
    }

    fn error(&self, message: impl Into<String>) -> IoError {
        IoError::Record {
            path: self.path.clone(),
            line: self.line,
            message: message.into(),
        }
    }

    fn parse_json(&self, line: &str) -> Result<(Option<String>, String)> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| self.error(format!("invalid JSON: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(self.error("expected a JSON object"));
        };
        let field = &self.options.text_field;
        let text = match object.remove(field) {
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(self.error(format!(
                    "field {field:?} must be a string, found {}",
                    json_kind(&other)
                )));
            }
            None => return Err(self.error(format!("missing field {field:?}"))),
        };
        let id = match &self.options.id_field {
            None => None,
            Some(id_field) => Some(match object.remove(id_field) {
                Some(Value::String(id)) => id,
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(self.error(format!(
                        "field {id_field:?} must be a string or a number, found {}",
                        json_kind(&other)
                    )));
                }
                None => return Err(self.error(format!("missing field {id_field:?}"))),
            }),
        };
        Ok((id, text))
    }
}

/// Reads past the rest of a line (its `\n` included) without keeping it; returns the bytes.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<u64> {
    let mut skipped = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(skipped);
        }
        let (used, end) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        reader.consume(used);
        skipped += used as u64;
        if end {
            return Ok(skipped);
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl InputReader {
    /// Reads the next record's line into `self.buffer` (its ending cut off; blank `.jsonl` lines
    /// skipped) and counts it; `Ok(false)` at the end of the file.
    fn advance(&mut self) -> Result<bool> {
        let Source::Lines {
            reader,
            compression,
        } = &mut self.source
        else {
            unreachable!("Parquet rows are read by next_parquet")
        };
        if self.unreadable {
            return Ok(false);
        }
        let limit = self.options.max_record_bytes;
        // At most the limit, a `\r` and a `\n`: a longer line is not kept in memory.
        let keep = limit.saturating_add(2);
        loop {
            self.buffer.clear();
            self.too_long = None;
            let read = (&mut *reader)
                .take(keep as u64)
                .read_until(b'\n', &mut self.buffer)
                .and_then(|n| {
                    if self.buffer.ends_with(b"\n") || n < keep {
                        Ok(n as u64)
                    } else {
                        Ok(n as u64 + skip_line(reader)?)
                    }
                });
            self.unreadable = read.is_err();
            let n = match (read, *compression) {
                (Ok(n), _) => n,
                (Err(e), None) => return Err(IoError::io(&self.path)(e)),
                // Not a record's fault: what follows cannot be read either.
                (Err(e), Some(compression)) => {
                    return Err(IoError::format(
                        &self.path,
                        format!(
                            "cannot decompress ({}) after line {}: {e}",
                            compression.name(),
                            self.line
                        ),
                    ));
                }
            };
            if n == 0 {
                return Ok(false);
            }
            if compression.is_none() {
                self.position.bytes.fetch_add(n, Ordering::Relaxed);
            }
            self.line += 1;
            let mut end = self.buffer.len();
            if self.buffer.ends_with(b"\n") {
                end -= 1;
                if self.buffer[..end].ends_with(b"\r") {
                    end -= 1;
                }
            }
            self.buffer.truncate(end);
            if end > limit {
                self.too_long = Some(n);
                self.buffer.clear();
            }
            let blank = self.too_long.is_none()
                && self.kind == Kind::Jsonl
                && std::str::from_utf8(&self.buffer).is_ok_and(|l| l.trim().is_empty());
            if !blank {
                self.index += 1;
                self.position.records.store(self.index, Ordering::Relaxed);
                return Ok(true);
            }
        }
    }

    /// Parses the line `advance` read.
    fn parse_line(&self) -> Result<(Option<String>, String)> {
        if let Some(length) = self.too_long {
            return Err(self.record_too_long(length));
        }
        let bytes = self.buffer.as_slice();
        if bytes.contains(&0) {
            return Err(self.error("NUL byte in input (is this a binary file?)"));
        }
        let line = std::str::from_utf8(bytes).map_err(|e| {
            self.error(format!(
                "invalid UTF-8 at byte {} of the line",
                e.valid_up_to()
            ))
        })?;
        match self.kind {
            Kind::Txt => Ok((None, line.to_string())),
            Kind::Jsonl => self.parse_json(line),
            Kind::Parquet => unreachable!("Parquet rows are read by next_parquet"),
        }
    }

    /// Passes over up to `n` records without parsing them (a bad one counts like a good one);
    /// returns how many there were.
    pub fn skip_records(&mut self, n: u64) -> Result<u64> {
        if let Source::Parquet(texts) = &mut self.source {
            // Reopened at the new row: Parquet skips whole pages without decoding them.
            let skipped = n.min(texts.rows - self.index);
            let options = &self.options;
            let at = self.index + skipped;
            **texts = ParquetTexts::open(
                &self.path,
                &options.text_field,
                options.id_field.as_deref(),
                at,
            )?;
            self.count_parquet_rows(skipped);
            return Ok(skipped);
        }
        let mut skipped = 0;
        while skipped < n && self.advance()? {
            skipped += 1;
        }
        Ok(skipped)
    }

    /// Records read (or skipped) so far: the index the next record will have.
    pub fn records_read(&self) -> u64 {
        self.index
    }

    /// How many records the file holds, counted as a reader would read them.
    pub fn count_records(path: &Path, options: InputOptions) -> Result<u64> {
        InputReader::open(path, options)?.skip_records(u64::MAX)
    }

    fn record_too_long(&self, length: u64) -> IoError {
        self.error(format!(
            "record longer than the limit of {} bytes ({length} bytes; --max-record-bytes raises the limit)",
            self.options.max_record_bytes
        ))
    }

    fn count_parquet_rows(&mut self, n: u64) {
        self.index += n;
        self.line = self.index;
        self.position.bytes.store(self.index, Ordering::Relaxed);
        self.position.records.store(self.index, Ordering::Relaxed);
    }

    fn next_parquet(&mut self) -> Option<Result<Record>> {
        let Source::Parquet(texts) = &mut self.source else {
            unreachable!("a Parquet reader")
        };
        let row = texts.next_row(self.index + 1)?;
        self.count_parquet_rows(1);
        let index = self.index - 1;
        let null = |field: &str| self.error(format!("field {field:?} is null"));
        Some(row.and_then(|(id, text)| {
            let text = text.ok_or_else(|| null(&self.options.text_field))?;
            if text.len() > self.options.max_record_bytes {
                return Err(self.record_too_long(text.len() as u64));
            }
            let id = match (&self.options.id_field, id) {
                (Some(field), None) => return Err(null(field)),
                (_, id) => id.unwrap_or_else(|| index.to_string()),
            };
            Ok(Record {
                id,
                text,
                line: self.line,
            })
        }))
    }
}

impl Iterator for InputReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.kind == Kind::Parquet {
            return self.next_parquet();
        }
        match self.advance() {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(Err(e)),
        }
        let index = self.index - 1;
        Some(self.parse_line().map(|(id, text)| Record {
            id: id.unwrap_or_else(|| index.to_string()),
            text,
            line: self.line,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, content: &[u8], options: InputOptions) -> Vec<Result<Record>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        InputReader::open(&path, options).unwrap().collect()
    }

    #[test]
    fn position_counts_bytes_and_records_and_extrapolates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, b"aaa\nbbb\nccc\nddd\n").unwrap();
        let mut reader = InputReader::open(&path, InputOptions::default()).unwrap();
        let position = reader.position();
        assert_eq!(
            (position.file_bytes, position.estimated_records()),
            (16, None)
        );
        reader.next().unwrap().unwrap();
        assert_eq!((position.bytes(), position.records()), (4, 1));
        assert_eq!(position.estimated_records(), Some(4));
        assert_eq!(reader.count(), 3);
        assert_eq!((position.bytes(), position.records()), (16, 4));
    }

    #[test]
    fn skipping_counts_records_like_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        // Blank and whitespace-only lines are not records; bad ones are.
        std::fs::write(
            &path,
            b"{\"text\": \"a\"}\n\n  \r\n{\"text\": 1}\nbad \xff\n{\"text\": \"d\"}",
        )
        .unwrap();
        let options = InputOptions::default;
        assert_eq!(InputReader::count_records(&path, options()).unwrap(), 4);
        let read: Vec<Result<Record>> = InputReader::open(&path, options()).unwrap().collect();
        assert_eq!(read.len(), 4);
        let mut reader = InputReader::open(&path, options()).unwrap();
        assert_eq!(reader.skip_records(3).unwrap(), 3);
        let last = reader.next().unwrap().unwrap();
        assert_eq!(
            (last.id.as_str(), last.text.as_str(), last.line),
            ("3", "d", 6)
        );
        assert_eq!(reader.skip_records(5).unwrap(), 0);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn texts(records: Vec<Result<Record>>) -> Vec<(String, String, u64)> {
        records
            .into_iter()
            .map(|r| r.map(|r| (r.id, r.text, r.line)).unwrap())
            .collect()
    }

    #[test]
    fn compressed_inputs_read_like_plain_ones() {
        let jsonl = "{\"text\": \"a\", \"n\": 5}\n\n{\"text\": \"été 夏\", \"n\": 6}\n{\"text\": \"\", \"n\": 7}";
        let options = || InputOptions {
            id_field: Some("n".into()),
            ..Default::default()
        };
        let plain = texts(read("in.jsonl", jsonl.as_bytes(), options()));
        assert_eq!(plain.len(), 3);
        assert_eq!(plain[1], ("6".into(), "été 夏".into(), 3));
        let (first, second) = jsonl.split_at(20);
        for (name, content) in [
            ("in.jsonl.gz", gzip(jsonl.as_bytes())),
            ("in.ndjson.zst", zstd(jsonl.as_bytes())),
            // Several gzip members (pigz, bgzip) and several zstd frames make one stream.
            (
                "in.jsonl.gz",
                [gzip(first.as_bytes()), gzip(second.as_bytes())].concat(),
            ),
            (
                "in.jsonl.zst",
                [zstd(first.as_bytes()), zstd(second.as_bytes())].concat(),
            ),
        ] {
            assert_eq!(texts(read(name, &content, options())), plain, "{name}");
        }
        let txt = "one\r\n\ntwo\n";
        let plain = texts(read("a.txt", txt.as_bytes(), InputOptions::default()));
        for (name, content) in [
            ("a.txt.gz", gzip(txt.as_bytes())),
            ("a.txt.zst", zstd(txt.as_bytes())),
        ] {
            assert_eq!(
                texts(read(name, &content, InputOptions::default())),
                plain,
                "{name}"
            );
        }
        // Resume and shards skip records of a compressed input like those of a plain one.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl.zst");
        std::fs::write(&path, zstd(jsonl.as_bytes())).unwrap();
        assert_eq!(InputReader::count_records(&path, options()).unwrap(), 3);
        let mut reader = InputReader::open(&path, options()).unwrap();
        assert_eq!(reader.skip_records(2).unwrap(), 2);
        assert_eq!(reader.next().unwrap().unwrap().id, "7");
    }

    #[test]
    fn damaged_compressed_inputs_are_errors_naming_the_file_and_line() {
        let lines: String = (0..5000).map(|i| format!("line {i} of a text\n")).collect();
        // Cut short, as by an interrupted download or copy; or not compressed at all.
        let (gz, zst) = (gzip(lines.as_bytes()), zstd(lines.as_bytes()));
        for (name, content, compression) in [
            ("cut.txt.gz", gz[..gz.len() / 2].to_vec(), "gzip"),
            ("cut.txt.zst", zst[..zst.len() / 2].to_vec(), "zstd"),
            ("plain.txt.gz", lines.as_bytes().to_vec(), "gzip"),
        ] {
            let records = read(name, &content, InputOptions::default());
            let error = records
                .last()
                .unwrap()
                .as_ref()
                .expect_err(name)
                .to_string();
            assert!(error.contains(name), "{error}");
            assert!(
                error.contains(&format!(
                    "cannot decompress ({compression}) after line {}",
                    records.len() - 1
                )),
                "{error}"
            );
            // The lines before the damage were read.
            for (i, record) in records[..records.len() - 1].iter().enumerate() {
                assert_eq!(record.as_ref().unwrap().text, format!("line {i} of a text"));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["in.parquet.gz", "in.gz", "in.jsonl.bz2"] {
            let path = dir.path().join(name);
            std::fs::write(&path, gzip(b"x")).unwrap();
            let error = InputReader::open(&path, InputOptions::default())
                .err()
                .unwrap();
            assert!(
                error.to_string().contains("unsupported input extension"),
                "{error}"
            );
        }
    }

    #[test]
    fn progress_through_a_compressed_input_counts_its_compressed_bytes() {
        let lines: String = (0..20_000).map(|i| format!("text number {i}\n")).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt.gz");
        std::fs::write(&path, gzip(lines.as_bytes())).unwrap();
        let mut reader = InputReader::open(&path, InputOptions::default()).unwrap();
        let position = reader.position();
        reader.next().unwrap().unwrap();
        assert!(position.bytes() > 0 && position.bytes() < position.file_bytes);
        assert_eq!(reader.count(), 19_999);
        assert_eq!(position.bytes(), position.file_bytes);
        assert_eq!(position.estimated_records(), Some(20_000));
    }

    /// A line past the limit is a bad record naming its line, read past without being kept;
    /// the lines around it, and one exactly at the limit (with either ending), are read.
    #[test]
    fn records_longer_than_the_limit_are_errors_and_reading_goes_on() {
        let options = InputOptions {
            max_record_bytes: 8,
            ..Default::default()
        };
        let long = "x".repeat(3 * (1 << 20));
        let content = format!("short\n{long}\n12345678\r\nabcdefghi\n12345678");
        for name in ["a.txt", "a.txt.gz"] {
            let bytes = if name.ends_with(".gz") {
                gzip(content.as_bytes())
            } else {
                content.clone().into_bytes()
            };
            let records = read(name, &bytes, options.clone());
            let lines: Vec<std::result::Result<String, String>> = records
                .into_iter()
                .map(|r| r.map(|r| r.text).map_err(|e| e.to_string()))
                .collect();
            assert_eq!(lines.len(), 5, "{name}: {lines:?}");
            assert_eq!(lines[0].as_deref(), Ok("short"));
            let error = lines[1].as_ref().unwrap_err();
            assert!(
                error.contains(&format!("{name}:2")) && error.contains("limit of 8 bytes"),
                "{error}"
            );
            assert_eq!(lines[2].as_deref(), Ok("12345678"));
            assert!(lines[3].as_ref().unwrap_err().contains(":4"), "{lines:?}");
            assert_eq!(lines[4].as_deref(), Ok("12345678"));
        }
        // No line break at all: one bad record, then the end; skipping counts it as reading does.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one-line.jsonl");
        std::fs::write(&path, &long).unwrap();
        let mut reader = InputReader::open(&path, options.clone()).unwrap();
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
        assert_eq!(reader.position().bytes(), long.len() as u64);
        assert_eq!(InputReader::count_records(&path, options).unwrap(), 1);
    }

    #[test]
    fn txt_lines_are_texts() {
        let records = read("a.txt", b"one\r\n\ntwo \xc3\xa9\n", InputOptions::default());
        let texts: Vec<String> = records.into_iter().map(|r| r.unwrap().text).collect();
        assert_eq!(texts, vec!["one", "", "two é"]);
    }

    #[test]
    fn jsonl_fields_ids_and_errors_name_file_line_and_field() {
        let options = InputOptions {
            text_field: "body".into(),
            id_field: Some("key".into()),
            ..Default::default()
        };
        let content = b"{\"body\": \"a\", \"key\": 7}\n\n{\"body\": 3, \"key\": \"x\"}\n{\"key\": \"y\"}\nnot json\n[1]\n";
        let records = read("in.jsonl", content, options);
        assert_eq!(
            records[0].as_ref().unwrap(),
            &Record {
                id: "7".into(),
                text: "a".into(),
                line: 1
            }
        );
        let errors: Vec<String> = records[1..]
            .iter()
            .map(|r| r.as_ref().unwrap_err().to_string())
            .collect();
        assert!(
            errors[0].ends_with("in.jsonl:3: field \"body\" must be a string, found a number"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].ends_with("in.jsonl:4: missing field \"body\""),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].contains("in.jsonl:5: invalid JSON"),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].ends_with("in.jsonl:6: expected a JSON object"),
            "{}",
            errors[3]
        );
    }

    #[test]
    fn invalid_utf8_and_nul_bytes_are_errors_with_line_numbers() {
        let records = read(
            "b.txt",
            b"ok\nbad \xff\nnul\0here\n",
            InputOptions::default(),
        );
        assert!(records[0].is_ok());
        assert!(
            records[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("b.txt:2: invalid UTF-8")
        );
        assert!(
            records[2]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("b.txt:3: NUL byte")
        );
    }
}
