//! Fetching a model folder from the Hugging Face hub by id, into the standard HF cache
//! (`HF_HOME` honoured), so that it can then be loaded like any local folder.

use std::path::PathBuf;

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// `owner/name` with no path separators beyond the one slash: not a local path.
pub fn looks_like_model_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..")
}

/// The files loading may read in the root folder and in each module's folder.
const MODULE_FILES: [&str; 6] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];

/// Downloads what loading needs and returns the local snapshot folder: the root's files and
/// those of every module in `modules.json` (a `StaticEmbedding` model keeps its table and
/// tokenizer in `0_StaticEmbedding/`, and has no config.json). Missing files are left for
/// loading to name.
pub fn download(model_id: &str) -> Result<PathBuf> {
    let hub = |e: ApiError| {
        ModelError::Hub(format!(
            "{model_id}: no such local folder, and fetching it from the Hugging Face hub failed: {e}"
        ))
    };
    let api = ApiBuilder::from_env().build().map_err(hub)?;
    let repo = api.model(model_id.to_string());
    // A sentence-transformers model has modules.json, a plain Hugging Face one config.json:
    // one of them must be there (and the hub reachable).
    let modules = get_optional(&repo, "modules.json");
    let root_file = match &modules {
        Some(modules) => modules.clone(),
        None => repo.get("config.json").map_err(hub)?,
    };
    let mut folders = vec![String::new()];
    if let Some(modules) = &modules {
        #[derive(Deserialize)]
        struct Entry {
            path: String,
        }
        let bytes = std::fs::read(modules).map_err(|source| ModelError::Io {
            path: modules.clone(),
            source,
        })?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&bytes).map_err(|source| ModelError::Json {
                path: modules.clone(),
                source,
            })?;
        folders.extend(
            entries
                .into_iter()
                .map(|e| e.path.trim_matches('/').to_string())
                .filter(|path| !path.is_empty() && path != "."),
        );
    }
    for folder in &folders {
        for file in MODULE_FILES {
            match folder.as_str() {
                "" => get_optional(&repo, file),
                folder => get_optional(&repo, &format!("{folder}/{file}")),
            };
        }
    }
    Ok(root_file
        .parent()
        .expect("a file in a snapshot folder")
        .to_path_buf())
}

fn get_optional(repo: &ApiRepo, file: &str) -> Option<PathBuf> {
    repo.get(file).ok()
}
