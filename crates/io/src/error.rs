use std::path::PathBuf;

/// Errors name the file, and for input records the line and field, so a user can find them.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    // The cause is in the message, not a `source`: a chain would print it twice.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Record {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, IoError>;

impl IoError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
        move |cause| IoError::Io {
            path: path.to_path_buf(),
            cause,
        }
    }

    pub(crate) fn format(path: &std::path::Path, message: impl Into<String>) -> IoError {
        IoError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
