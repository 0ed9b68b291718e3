//! Reading texts and writing embeddings: the file formats of pool-encode.

pub mod dense;
pub mod dense_reader;
mod error;
pub mod input;
mod json_lines;
pub mod output;
pub mod parquet;
pub mod rejects;
pub mod shard;
pub mod sparse_jsonl;
pub mod store;

pub use dense::{DenseFormat, DenseWriter, ValueType, f32_bytes, partial_path};
pub use dense_reader::{DenseReader, DenseRows, read_dense, read_embeddings};
pub use error::{IoError, Result};
pub use input::{InputOptions, InputPosition, InputReader, Record};
pub use output::{OutputFormat, RowWriter};
pub use rejects::RejectsWriter;
pub use shard::{Merged, Shard, ShardManifest};
pub use sparse_jsonl::SparseJsonlWriter;
pub use store::{load_embeddings, save_embeddings, texts_sidecar};
