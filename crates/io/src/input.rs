//! Streaming text input: records are read one line at a time, so memory does not grow with the
//! file. Every error names the file, the line, and for JSON the field.
//!
//! - `.jsonl`: one JSON object a line; the text in `text_field` (default `text`), an optional id
//!   in `id_field`. Blank lines are skipped.
//! - `.txt`: one text a line (an empty line is an empty text); `\r\n` endings are accepted.
//! - `.parquet`: the text in the string column `text_field`, the id in `id_field`; a batch of
//!   rows read at a time. Errors give the 1-based row where other formats give the line.

use std::fs::File;
use std::io::{BufRead, BufReader};
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
    Lines(BufReader<File>),
    Parquet(Box<ParquetTexts>),
}

#[derive(Debug, Clone)]
pub struct InputOptions {
    pub text_field: String,
    pub id_field: Option<String>,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            text_field: "text".into(),
            id_field: None,
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
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") | Some("ndjson") => Kind::Jsonl,
            Some("txt") => Kind::Txt,
            Some("parquet") => Kind::Parquet,
            _ => {
                return Err(IoError::format(
                    path,
                    "unsupported input extension (expected .jsonl, .txt or .parquet)",
                ));
            }
        };
        let (source, file_bytes) = if kind == Kind::Parquet {
            let texts =
                ParquetTexts::open(path, &options.text_field, options.id_field.as_deref(), 0)?;
            let rows = texts.rows;
            (Source::Parquet(Box::new(texts)), rows)
        } else {
            let file = File::open(path).map_err(IoError::io(path))?;
            let bytes = file.metadata().map_err(IoError::io(path))?.len();
            (
                Source::Lines(BufReader::with_capacity(1 << 20, file)),
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
                bytes: Arc::default(),
                records: Arc::default(),
                file_bytes,
            },
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
        let Source::Lines(reader) = &mut self.source else {
            unreachable!("Parquet rows are read by next_parquet")
        };
        loop {
            self.buffer.clear();
            let n = reader
                .read_until(b'\n', &mut self.buffer)
                .map_err(IoError::io(&self.path))?;
            if n == 0 {
                return Ok(false);
            }
            self.position.bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.line += 1;
            let mut end = self.buffer.len();
            if self.buffer.ends_with(b"\n") {
                end -= 1;
                if self.buffer[..end].ends_with(b"\r") {
                    end -= 1;
                }
            }
            self.buffer.truncate(end);
            let blank = self.kind == Kind::Jsonl
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
