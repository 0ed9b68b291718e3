//! Reading texts and writing embeddings: the file formats of pool-encode.

mod error;
pub mod input;
pub mod npy;
pub mod sparse_jsonl;
pub mod store;

pub use error::{IoError, Result};
pub use input::{InputOptions, InputPosition, InputReader, Record};
pub use npy::{NpyWriter, partial_path, read_npy};
pub use sparse_jsonl::SparseJsonlWriter;
pub use store::{load_embeddings, save_embeddings, texts_sidecar};
