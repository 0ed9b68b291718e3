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
    /// A device that does not exist, or that this build or machine cannot drive.
    #[error("{0}")]
    Device(String),
    /// The device ran out of memory (lower `max_batch_tokens` / `batch_size`). On burn 0.21's
    /// GPU backends the device is unusable in this process afterwards: every later call fails
    /// too; a pool worker exits and is replaced, and the pool retries with smaller batches.
    #[error("out of device memory (lower max_batch_tokens or batch_size): {0}")]
    OutOfMemory(String),
    /// The backend failed (it panicked; the message is its first line). The device may be
    /// unusable afterwards, as above.
    #[error("backend failure: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, EncodeError>;
