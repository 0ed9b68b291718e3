use std::path::{Path, PathBuf};

/// Everything that can go wrong while loading or running a model. Every variant that comes from
/// a file names that file, so a user can fix a broken model folder without reading our code.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: missing required file")]
    MissingFile { path: PathBuf },
    #[error("{path}: {message}")]
    InvalidConfig { path: PathBuf, message: String },
    #[error(
        "{path}: unsupported architecture {name:?} (supported: bert, distilbert, mpnet, roberta, xlm-roberta, camembert, modernbert, llama, mistral, qwen2, qwen3, gemma2, gemma3_text, t5, mt5)"
    )]
    UnknownArchitecture { path: PathBuf, name: String },
    #[error("{path}: invalid safetensors file: {message}")]
    InvalidWeights { path: PathBuf, message: String },
    #[error("{path}: tensor {name:?} not found (looked for: {tried})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        tried: String,
    },
    #[error("{path}: tensor {name:?} has shape {found:?}, expected {expected:?}")]
    WrongShape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor {name:?} has unsupported dtype {dtype}")]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("model hub: {0}")]
    Hub(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub fn config(path: &Path, message: impl Into<String>) -> Self {
        ModelError::InvalidConfig {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Reads a file, turning "not found" into [`ModelError::MissingFile`].
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => ModelError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Reads and parses a JSON file into `T`, naming the file in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}
