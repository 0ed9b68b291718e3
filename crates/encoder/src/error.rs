use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Model(#[from] pool_encode_model::ModelError),
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("{0}")]
    InvalidOption(String),
}

pub type Result<T> = std::result::Result<T, EncodeError>;
