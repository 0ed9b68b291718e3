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

/// Downloads what loading needs and returns the local snapshot folder.
pub fn download(model_id: &str) -> Result<PathBuf> {
    let hub = |e: ApiError| {
        ModelError::Hub(format!(
            "{model_id}: no such local folder, and fetching it from the Hugging Face hub failed: {e}"
        ))
    };
    let api = ApiBuilder::from_env().build().map_err(hub)?;
    let repo = api.model(model_id.to_string());
    let config = repo.get("config.json").map_err(hub)?;
    for required in ["model.safetensors", "tokenizer.json"] {
        repo.get(required).map_err(hub)?;
    }
    for optional in [
        "tokenizer_config.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
    ] {
        get_optional(&repo, optional);
    }
    if let Some(modules) = get_optional(&repo, "modules.json") {
        #[derive(Deserialize)]
        struct Entry {
            path: String,
        }
        let bytes = std::fs::read(&modules).map_err(|source| ModelError::Io {
            path: modules.clone(),
            source,
        })?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&bytes).map_err(|source| ModelError::Json {
                path: modules.clone(),
                source,
            })?;
        for entry in entries.iter().filter(|e| !e.path.is_empty()) {
            get_optional(&repo, &format!("{}/config.json", entry.path));
            get_optional(&repo, &format!("{}/model.safetensors", entry.path));
        }
    }
    Ok(config
        .parent()
        .expect("a file in a snapshot folder")
        .to_path_buf())
}

fn get_optional(repo: &ApiRepo, file: &str) -> Option<PathBuf> {
    repo.get(file).ok()
}
