//! Saving embeddings together with the texts they came from, and loading both back: what
//! sentence-transformers users do with pickle or `torch.save`, in open formats.
//!
//! - `.safetensors`: one file with `embeddings` (F32 `[N, dim]`), and when texts are given,
//!   `text_bytes` (U8, the UTF-8 texts concatenated) and `text_offsets` (I64 `[N + 1]`).
//! - `.npy`: the matrix; texts, when given, in a `<stem>.texts.jsonl` sidecar (one JSON string a line).

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use pool_encode_encoder::Embeddings;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::dense::{DenseFormat, DenseWriter, ValueType, f32_bytes, partial_path};
use crate::dense_reader::read_embeddings;
use crate::error::{IoError, Result};

enum Format {
    Npy,
    Safetensors,
}

fn format_of(path: &Path) -> Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(Format::Npy),
        Some("safetensors") => Ok(Format::Safetensors),
        _ => Err(IoError::format(
            path,
            "unsupported embeddings file extension (expected .npy or .safetensors)",
        )),
    }
}

/// The sidecar that holds the texts of an `.npy` file.
pub fn texts_sidecar(path: &Path) -> PathBuf {
    path.with_extension("texts.jsonl")
}

pub fn save_embeddings(
    path: &Path,
    embeddings: &Embeddings,
    texts: Option<&[String]>,
) -> Result<()> {
    if let Some(texts) = texts
        && texts.len() != embeddings.rows()
    {
        return Err(IoError::format(
            path,
            format!("{} texts for {} embeddings", texts.len(), embeddings.rows()),
        ));
    }
    match format_of(path)? {
        Format::Npy => {
            let mut writer =
                DenseWriter::create(path, DenseFormat::Npy, embeddings.dim(), ValueType::F32)?;
            writer.write_rows(&f32_bytes(embeddings.as_slice()))?;
            writer.finish()?;
            if let Some(texts) = texts {
                write_atomically(&texts_sidecar(path), |out| {
                    for text in texts {
                        serde_json::to_writer(&mut *out, text).map_err(std::io::Error::other)?;
                        out.write_all(b"\n")?;
                    }
                    Ok(())
                })?;
            }
        }
        Format::Safetensors => {
            let values = f32_bytes(embeddings.as_slice());
            let mut tensors = vec![(
                "embeddings".to_string(),
                view(
                    path,
                    Dtype::F32,
                    vec![embeddings.rows(), embeddings.dim()],
                    &values,
                )?,
            )];
            let (bytes, offsets): (Vec<u8>, Vec<u8>);
            if let Some(texts) = texts {
                bytes = texts
                    .iter()
                    .flat_map(|t| t.as_bytes().iter().copied())
                    .collect();
                let mut at = 0i64;
                let mut o = vec![0i64];
                for t in texts {
                    at += t.len() as i64;
                    o.push(at);
                }
                offsets = o.iter().flat_map(|v| v.to_le_bytes()).collect();
                tensors.push((
                    "text_bytes".into(),
                    view(path, Dtype::U8, vec![bytes.len()], &bytes)?,
                ));
                tensors.push((
                    "text_offsets".into(),
                    view(path, Dtype::I64, vec![texts.len() + 1], &offsets)?,
                ));
            }
            let metadata = HashMap::from([("format".to_string(), "pool-encode".to_string())]);
            let serialized = safetensors::serialize(tensors, Some(metadata))
                .map_err(|e| IoError::format(path, e.to_string()))?;
            write_atomically(path, |out| out.write_all(&serialized))?;
        }
    }
    Ok(())
}

/// Loads embeddings and, when the file has them, their texts.
pub fn load_embeddings(path: &Path) -> Result<(Embeddings, Option<Vec<String>>)> {
    let format = format_of(path)?;
    let embeddings = read_embeddings(path)?;
    let rows = embeddings.rows();
    let texts = match format {
        Format::Npy => {
            let sidecar = texts_sidecar(path);
            if !sidecar.exists() {
                return Ok((embeddings, None));
            }
            let file = std::fs::File::open(&sidecar).map_err(IoError::io(&sidecar))?;
            let mut texts = Vec::with_capacity(rows);
            for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.map_err(IoError::io(&sidecar))?;
                texts.push(serde_json::from_str(&line).map_err(|e| IoError::Record {
                    path: sidecar.clone(),
                    line: i as u64 + 1,
                    message: format!("expected a JSON string: {e}"),
                })?);
            }
            if texts.len() != rows {
                return Err(IoError::format(
                    &sidecar,
                    format!("{} texts for {rows} embeddings", texts.len()),
                ));
            }
            Some(texts)
        }
        Format::Safetensors => {
            let bytes = std::fs::read(path).map_err(IoError::io(path))?;
            let file = SafeTensors::deserialize(&bytes)
                .map_err(|e| IoError::format(path, e.to_string()))?;
            match (file.tensor("text_bytes"), file.tensor("text_offsets")) {
                (Ok(text), Ok(offsets)) => {
                    Some(split_texts(path, text.data(), offsets.data(), rows)?)
                }
                _ => None,
            }
        }
    };
    Ok((embeddings, texts))
}

fn view<'a>(
    path: &Path,
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
) -> Result<TensorView<'a>> {
    TensorView::new(dtype, shape, data).map_err(|e| IoError::format(path, e.to_string()))
}

fn split_texts(path: &Path, bytes: &[u8], offsets: &[u8], rows: usize) -> Result<Vec<String>> {
    let offsets: Vec<usize> = offsets
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .collect();
    if offsets.len() != rows + 1 {
        return Err(IoError::format(
            path,
            "text_offsets does not match the number of embeddings",
        ));
    }
    offsets
        .windows(2)
        .map(|w| {
            bytes
                .get(w[0]..w[1])
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
                .ok_or_else(|| IoError::format(path, "text_offsets out of range or invalid UTF-8"))
        })
        .collect()
}

/// Writes through `<path>.partial`, then renames: readers never see half a file.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let partial = partial_path(path);
    let file = std::fs::File::create(&partial).map_err(IoError::io(&partial))?;
    let mut out = BufWriter::new(file);
    write(&mut out)
        .and_then(|_| out.flush())
        .and_then(|_| out.get_ref().sync_all())
        .map_err(IoError::io(&partial))?;
    std::fs::rename(&partial, path).map_err(IoError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_and_texts_round_trip_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let embeddings = Embeddings::new(vec![0.5, -1.0, 2.0, 3.25, 0.0, -0.125], 3, 2);
        let texts = vec!["héllo".to_string(), String::new(), "世界 🎉\n".to_string()];
        for name in ["e.npy", "e.safetensors"] {
            let path = dir.path().join(name);
            save_embeddings(&path, &embeddings, Some(&texts)).unwrap();
            let (back, back_texts) = load_embeddings(&path).unwrap();
            assert_eq!(back, embeddings, "{name}");
            assert_eq!(back_texts.as_deref(), Some(&texts[..]), "{name}");
        }
        let bare = dir.path().join("bare.safetensors");
        save_embeddings(&bare, &embeddings, None).unwrap();
        assert_eq!(load_embeddings(&bare).unwrap().1, None);
        let err = save_embeddings(&dir.path().join("x.csv"), &embeddings, None).unwrap_err();
        assert!(err.to_string().contains("x.csv"));
        let err =
            save_embeddings(&dir.path().join("y.npy"), &embeddings, Some(&texts[..2])).unwrap_err();
        assert!(err.to_string().contains("2 texts for 3"));
    }
}
