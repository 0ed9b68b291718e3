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
/// tokenizer in `0_StaticEmbedding/`, and has no config.json), and of every route of a
/// `Router` (an inference-free SPLADE model's query and document modules). Missing files are
/// left for loading to name. The cache and the hub's address come from the environment
/// (`HF_HOME`, `HF_ENDPOINT`).
pub fn download(model_id: &str) -> Result<PathBuf> {
    download_with(ApiBuilder::from_env(), model_id)
}

fn download_with(api: ApiBuilder, model_id: &str) -> Result<PathBuf> {
    let hub = |e: ApiError| {
        ModelError::Hub(format!(
            "{model_id}: no such local folder, and fetching it from the Hugging Face hub failed: {e}"
        ))
    };
    let api = api.build().map_err(hub)?;
    let repo = api.model(model_id.to_string());
    // A sentence-transformers model has modules.json, a plain Hugging Face one config.json:
    // one of them must be there (and the hub reachable).
    let modules = get_optional(&repo, "modules.json");
    let root_file = match &modules {
        Some(modules) => modules.clone(),
        None => repo.get("config.json").map_err(hub)?,
    };
    // Names come from the repository's JSON: one that climbs out of it is skipped.
    let inside = |path: &str| !path.split('/').any(|part| part == "..");
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
                .filter(|path| !path.is_empty() && path != "." && inside(path)),
        );
    }
    let in_folder = |folder: &str, file: &str| match folder {
        "" => file.to_string(),
        folder => format!("{folder}/{file}"),
    };
    // A `Router` keeps its routes' modules in folders of their own, named in its
    // router_config.json (`structure`) rather than in modules.json.
    let mut i = 0;
    while let Some(folder) = folders.get(i).cloned() {
        i += 1;
        for file in MODULE_FILES {
            get_optional(&repo, &in_folder(&folder, file));
        }
        // A large model's weights are shards that its index names (only plain file names).
        let index = in_folder(&folder, "model.safetensors.index.json");
        if let Some(index) = get_optional(&repo, &index) {
            for shard in crate::weights::shard_files(&index).unwrap_or_default() {
                get_optional(&repo, &in_folder(&folder, &shard));
            }
        }
        if let Some(router) = get_optional(&repo, &in_folder(&folder, "router_config.json")) {
            #[derive(Deserialize)]
            struct Router {
                structure: std::collections::BTreeMap<String, Vec<String>>,
            }
            // A broken file is left for loading to name.
            let routes = std::fs::read(&router)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Router>(&bytes).ok());
            for name in routes
                .into_iter()
                .flat_map(|r| r.structure.into_values())
                .flatten()
            {
                let route = in_folder(&folder, name.trim_matches('/'));
                if inside(&route) && !folders.contains(&route) {
                    folders.push(route);
                }
            }
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

#[cfg(test)]
mod tests {
    use std::hash::{Hash, Hasher};
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;

    use hf_hub::Cache;

    use super::*;
    use crate::folder::{ModelFolder, Pipeline};

    /// A stand-in for the hub on a local port: `GET /acme/served/resolve/main/{file}` serves
    /// `root`'s files with the headers hf-hub reads (etag, commit, byte ranges), 404 for the rest.
    fn serve(root: &'static Path) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                answer(stream, root);
            }
        });
        address
    }

    fn answer(mut stream: TcpStream, root: &Path) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        reader.read_line(&mut request).unwrap();
        let mut range = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap() == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = value.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
        let path = request.split(' ').nth(1).unwrap_or_default();
        let file = path
            .strip_prefix("/acme/served/resolve/main/")
            .map(|file| root.join(file))
            .filter(|file| !path.contains("..") && file.is_file());
        let Some(file) = file else {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        };
        let bytes = std::fs::read(&file).unwrap();
        let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
            Some((start, "")) => (start.parse().unwrap(), bytes.len() - 1),
            Some((start, end)) => (start.parse().unwrap(), end.parse().unwrap()),
            None => (0, bytes.len() - 1),
        };
        let body = &bytes[start..=end];
        // The cache keeps a blob per etag: one per file.
        let etag = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            file.hash(&mut hasher);
            hasher.finish()
        };
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\netag: \"{etag:016x}\"\r\nx-repo-commit: 0123456789abcdef\r\n\
             content-range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len(),
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    }

    fn files_under(dir: &Path) -> Vec<String> {
        let mut files = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(folder).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let name = path
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    files.push(name);
                }
            }
        }
        files.sort();
        files
    }

    /// The test model `name`, and an API for a stand-in hub that serves it as `acme/served`,
    /// with a cache of its own (`cache`, to remove).
    fn served(name: &str, cache: &str) -> (&'static Path, PathBuf, impl Fn() -> ApiBuilder) {
        let root: &'static Path = Box::leak(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/data/models")
                .join(name)
                .into_boxed_path(),
        );
        let cache = std::env::temp_dir().join(format!("{cache}-{}", std::process::id()));
        let endpoint = serve(root);
        let api = {
            let cache = cache.clone();
            move || {
                ApiBuilder::from_cache(Cache::new(cache.clone()))
                    .with_endpoint(endpoint.clone())
                    .with_progress(false)
                    .with_retries(0)
            }
        };
        (root, cache, api)
    }

    /// A large model's weights are shards named by model.safetensors.index.json: all of them
    /// come down, and the download loads.
    #[test]
    fn a_sharded_checkpoint_comes_down_whole() {
        let (root, cache, api) = served("mistral-lasttoken-sharded-new", "pool-encode-hub-shards");
        let snapshot = download_with(api(), "acme/served").unwrap();
        assert_eq!(files_under(&snapshot), files_under(root));
        let folder = ModelFolder::load(&snapshot).unwrap();
        let module = folder.transformer().unwrap();
        crate::weights::Weights::open(&folder.weights_path(), module.architecture.weight_prefix())
            .unwrap();
        std::fs::remove_dir_all(&cache).unwrap();
    }

    /// An inference-free SPLADE model keeps its routes' modules in folders that only its
    /// router_config.json names: all of them come down, and the download loads.
    #[test]
    fn a_routers_modules_come_down_with_the_model() {
        let (root, cache, api) = served("splade-inference-free", "pool-encode-hub");
        let snapshot = download_with(api(), "acme/served").unwrap();
        // Every file the hub has is one loading may read.
        assert_eq!(files_under(&snapshot), files_under(root));
        let folder = ModelFolder::load(&snapshot).unwrap();
        assert!(
            matches!(folder.pipeline, Pipeline::Splade { query: Some(_), .. }),
            "the query route's table"
        );

        let missing = download_with(api(), "acme/no-such-model")
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("acme/no-such-model: no such local folder, and fetching it from the Hugging Face hub failed"),
            "{missing}"
        );
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
