//! Reading texts and writing embeddings: the file formats of pool-encode.

pub mod dense;
mod error;
pub mod input;
mod json_lines;
pub mod output;
pub mod parquet;
pub mod rejects;
pub mod shard;
pub mod sparse_jsonl;
pub mod store;

pub use dense::{
    DenseFormat, DenseWriter, ValueType, f32_bytes, partial_path, read_npy, read_npy_values,
};
pub use error::{IoError, Result};
pub use input::{InputOptions, InputPosition, InputReader, Record};
pub use output::{OutputFormat, RowWriter};
pub use rejects::RejectsWriter;
pub use shard::{Merged, Shard, ShardManifest};
pub use sparse_jsonl::SparseJsonlWriter;
pub use store::{load_embeddings, save_embeddings, texts_sidecar};
