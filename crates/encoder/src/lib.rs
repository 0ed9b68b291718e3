//! Sentence embeddings the way sentence-transformers computes them: tokenize → batch →
//! transformer → pooling → Dense/Normalize → `truncate_dim` / `normalize_embeddings`
//! ([`SentenceEncoder`]); and sparse SPLADE rows, transformer → MLM head → SpladePooling
//! ([`SparseEncoder`], same tokenization and batching).
//!
//! ```no_run
//! use pool_encode_encoder::{EncodeOptions, SentenceEncoder};
//! let encoder = SentenceEncoder::load("models/all-MiniLM-L6-v2", "cpu".parse()?)?;
//! let embeddings = encoder.encode(&["A sentence.", "Another one."], &EncodeOptions::default())?;
//! let scores = encoder.similarity(&embeddings, &embeddings);
//! # Ok::<(), pool_encode_encoder::EncodeError>(())
//! ```

mod backend;
mod batching;
mod device;
mod embeddings;
mod error;
pub mod gpu;
mod quantization;
mod similarity;
mod sparse;
mod sparse_embeddings;
mod tokenizer;

use std::path::Path;
use std::sync::Arc;

use pool_encode_model::{ModelFolder, ModelKind, TokenBatch};
use tokenizers::Encoding;

use backend::ModelRunner;
pub use batching::next_batch_len;
pub use device::{Device, Precision};
pub use embeddings::Embeddings;
pub use error::{EncodeError, Result};
pub use pool_encode_model as model;
pub use quantization::{
    Quantization, QuantizationRanges, QuantizedEmbeddings, Quantizer, RangesBuilder,
    quantize_embeddings,
};
pub use similarity::SimilarityFn;
pub use sparse::{SparseEncoder, Task};
pub use sparse_embeddings::{SparseEmbeddings, SparseRow, Sparsity};
pub use tokenizer::TextTokenizer;

/// Options of one `encode` call, named as in ST's `encode`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EncodeOptions {
    /// Texts per batch at most.
    pub batch_size: usize,
    /// Padded tokens per batch at most (rows × longest row); `None`: `batch_size` alone decides.
    /// Texts are sorted by length, so a budget lets short texts go in large batches while long
    /// ones stay within memory: what a GPU wants.
    pub max_batch_tokens: Option<usize>,
    pub normalize_embeddings: bool,
    pub truncate_dim: Option<usize>,
    /// A key of the model's `prompts`.
    pub prompt_name: Option<String>,
    /// A literal prompt; wins over `prompt_name`.
    pub prompt: Option<String>,
    /// Sparse models: keep each row's largest entries only (overrides the model's setting).
    pub max_active_dims: Option<usize>,
}

impl EncodeOptions {
    /// Width of the rows `encode` returns for a model of `model_dimension` (`truncate_dim` applied).
    pub fn output_dimension(&self, model_dimension: usize) -> usize {
        self.truncate_dim
            .map_or(model_dimension, |d| d.min(model_dimension))
    }

    fn validate(&self) -> Result<()> {
        let invalid = |m: &str| Err(EncodeError::InvalidOption(m.into()));
        if self.batch_size == 0 {
            return invalid("batch_size must be at least 1");
        }
        if self.max_batch_tokens == Some(0) {
            return invalid("max_batch_tokens must be at least 1");
        }
        if self.truncate_dim == Some(0) {
            return invalid("truncate_dim must be at least 1");
        }
        if self.max_active_dims == Some(0) {
            return invalid("max_active_dims must be at least 1");
        }
        Ok(())
    }
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            batch_size: 32,
            max_batch_tokens: None,
            normalize_embeddings: false,
            truncate_dim: None,
            prompt_name: None,
            prompt: None,
            max_active_dims: None,
        }
    }
}

/// Texts tokenized and sorted for batching: the CPU half of `encode`, which a caller may run on
/// another thread while the device encodes the previous input ([`SentenceEncoder::prepare`]).
pub struct PreparedTexts {
    encodings: Vec<Encoding>,
    /// Input rows, longest first.
    order: Vec<usize>,
    prompt_length: Option<usize>,
}

impl PreparedTexts {
    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// Tokens of every text, special tokens included: the work this input represents.
    pub fn tokens(&self) -> usize {
        self.encodings.iter().map(Encoding::len).sum()
    }

    /// Tokens of each text (special tokens included), in input order.
    pub fn token_counts(&self) -> Vec<usize> {
        self.encodings.iter().map(Encoding::len).collect()
    }
}

/// A loaded model, ready to encode on one device.
pub struct SentenceEncoder {
    runner: Box<dyn ModelRunner>,
    tokenizer: TextTokenizer,
    device: Device,
    precision: Precision,
    similarity: SimilarityFn,
    /// Batch widths are rounded up to this: 1 on CPU; 8 on GPUs, whose backends compile kernels
    /// per shape (fewer widths, fewer compilations) and whose tensor cores want multiples of 8.
    /// Its effect alone was not measured.
    pad_to_multiple: usize,
    /// Batches in flight at once ([`SentenceEncoder::set_concurrent_batches`]).
    batches_in_flight: usize,
    /// The threads that run them when more than one. On a GPU, one host thread per batch: burn
    /// gives every thread its own device stream, so while one thread waits for its batch's
    /// result another builds and launches the next, and the GPU does not idle between batches.
    /// On the CPU, the threads the model computes on: each takes a batch, and an op of a batch
    /// splits over the threads that are idle (with every thread inside one batch, each op
    /// ends waiting for the slowest one).
    batch_threads: Option<Arc<rayon::ThreadPool>>,
}

/// Batches a GPU encoder keeps in flight unless told otherwise
/// ([`SentenceEncoder::set_concurrent_batches`]).
pub const DEFAULT_GPU_CONCURRENT_BATCHES: usize = 2;

/// A CPU encoder keeps one batch in flight per thread, up to this many: each batch holds its
/// own activations, and past a few batches the threads left over split the ops of those in
/// flight.
pub const MAX_DEFAULT_CPU_CONCURRENT_BATCHES: usize = 4;

/// Batches an encoder on `device` keeps in flight unless told otherwise: one per CPU thread (a
/// plain `cpu` has as many threads as rayon's global pool), at most
/// [`MAX_DEFAULT_CPU_CONCURRENT_BATCHES`]; [`DEFAULT_GPU_CONCURRENT_BATCHES`] on a GPU.
pub fn default_concurrent_batches(device: Device) -> usize {
    match device {
        Device::Cpu { threads } => threads
            .unwrap_or_else(rayon::current_num_threads)
            .clamp(1, MAX_DEFAULT_CPU_CONCURRENT_BATCHES),
        Device::Cuda(_) | Device::Wgpu(_) => DEFAULT_GPU_CONCURRENT_BATCHES,
    }
}

impl SentenceEncoder {
    /// Loads a model folder (or, with the `hub` feature, a hub model id) onto `device`, in f32.
    pub fn load(model: impl AsRef<Path>, device: Device) -> Result<Self> {
        Self::load_with_precision(model, device, Precision::F32)
    }

    /// As [`load`](Self::load), computing in `precision` (f16 / bf16 on GPU devices).
    pub fn load_with_precision(
        model: impl AsRef<Path>,
        device: Device,
        precision: Precision,
    ) -> Result<Self> {
        let path = resolve_model(model.as_ref())?;
        let folder = ModelFolder::load(&path)?;
        Self::from_folder(&folder, device, precision)
    }

    pub fn from_folder(folder: &ModelFolder, device: Device, precision: Precision) -> Result<Self> {
        if folder.kind() == ModelKind::Sparse {
            return Err(EncodeError::InvalidOption(format!(
                "{} is a sparse (SPLADE) model: encode it with SparseEncoder (pool-encode: --kind sparse)",
                folder.root.display()
            )));
        }
        Self::load_any(folder, device, precision, SimilarityFn::Cosine)
    }

    /// Loads either kind of model; `similarity` is used when the model names none (ST:
    /// cosine for dense models, dot for sparse ones).
    pub(crate) fn load_any(
        folder: &ModelFolder,
        device: Device,
        precision: Precision,
        similarity: SimilarityFn,
    ) -> Result<Self> {
        // The tokenizer first: it is cheap, and a broken one should fail before a GPU is touched.
        let tokenizer = TextTokenizer::load(folder)?;
        let similarity = match folder.similarity_fn_name.as_deref() {
            None => similarity,
            Some(name) => SimilarityFn::parse(name).ok_or_else(|| {
                pool_encode_model::ModelError::config(
                    &folder.root.join("config_sentence_transformers.json"),
                    format!("unknown similarity_fn_name {name:?}"),
                )
            })?,
        };
        let runner = backend::load(folder, device, precision)?;
        if let Some(rows) = runner.model().static_vocab_size() {
            let vocab = tokenizer.inner().get_vocab_size(true);
            if vocab > rows {
                return Err(pool_encode_model::ModelError::config(
                    &folder.weights_path(),
                    format!("the table has {rows} rows but the tokenizer has {vocab} tokens"),
                )
                .into());
            }
        }
        let in_flight = default_concurrent_batches(device);
        let mut encoder = SentenceEncoder {
            pad_to_multiple: if runner.cpu_threads().is_some() { 1 } else { 8 },
            runner,
            tokenizer,
            device,
            precision,
            similarity,
            batches_in_flight: 1,
            batch_threads: None,
        };
        encoder.set_concurrent_batches(in_flight)?;
        Ok(encoder)
    }
}

/// A local model folder for `model`: the path itself if it exists, else (with the `hub` feature)
/// the hub id downloaded into the Hugging Face cache.
pub fn resolve_model(model: &Path) -> Result<std::path::PathBuf> {
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    #[cfg(feature = "hub")]
    if let Some(id) = model
        .to_str()
        .filter(|s| pool_encode_model::hub::looks_like_model_id(s))
    {
        return Ok(pool_encode_model::hub::download(id)?);
    }
    Err(pool_encode_model::ModelError::MissingFile {
        path: model.to_path_buf(),
    }
    .into())
}

impl SentenceEncoder {
    pub fn device(&self) -> Device {
        self.device
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn embedding_dimension(&self) -> usize {
        self.runner.model().embedding_dimension()
    }

    /// Tokens a text is cut to, special tokens included. A `StaticEmbedding` model's texts are
    /// cut only where its tokenizer file says (ST's `max_seq_length` is then `math.inf`):
    /// `usize::MAX` if it does not.
    pub fn max_seq_length(&self) -> usize {
        self.tokenizer.max_seq_length()
    }

    /// Changes the truncation length; it cannot exceed what the position table encodes. A
    /// `StaticEmbedding` model has none to change, as in ST.
    pub fn set_max_seq_length(&mut self, max_seq_length: usize) -> Result<()> {
        let limit = self
            .folder()
            .transformer()
            .map_err(|_| {
                EncodeError::InvalidOption(
                    "a StaticEmbedding model has no max_seq_length to set (in ST it is math.inf); its tokenizer.json's truncation applies".into(),
                )
            })?
            .architecture
            .max_input_tokens();
        if max_seq_length == 0 || max_seq_length > limit {
            return Err(EncodeError::InvalidOption(format!(
                "max_seq_length {max_seq_length} is outside 1..={limit} (this model's position limit)"
            )));
        }
        self.tokenizer.set_max_seq_length(max_seq_length)
    }

    /// Batches in flight at once (at least 1). Default on a GPU:
    /// [`DEFAULT_GPU_CONCURRENT_BATCHES`], each with its own host thread and device stream; on
    /// the CPU: one per thread, at most [`MAX_DEFAULT_CPU_CONCURRENT_BATCHES`], run on the
    /// encoder's threads. Each one holds its own activations in memory. Rows do not depend on
    /// it.
    pub fn set_concurrent_batches(&mut self, batches: usize) -> Result<()> {
        if batches == 0 {
            return Err(EncodeError::InvalidOption(
                "concurrent batches must be at least 1".into(),
            ));
        }
        self.batch_threads = match self.runner.cpu_threads() {
            Some(threads) => Some(threads),
            None if batches == 1 => None,
            None => {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(batches)
                    .thread_name(|i| format!("gpu-batches-{i}"))
                    .build()
                    .map_err(|e| {
                        EncodeError::InvalidOption(format!("{batches} batch threads: {e}"))
                    })?;
                Some(Arc::new(pool))
            }
        };
        self.batches_in_flight = batches;
        Ok(())
    }

    pub fn concurrent_batches(&self) -> usize {
        self.batches_in_flight
    }

    pub fn similarity_fn(&self) -> SimilarityFn {
        self.similarity
    }

    pub fn folder(&self) -> &ModelFolder {
        self.runner.model().folder()
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// `similarity(a, b)` with the model's `similarity_fn_name`: a `[a.rows, b.rows]` matrix.
    pub fn similarity(&self, a: &Embeddings, b: &Embeddings) -> Embeddings {
        self.similarity.matrix(a, b)
    }

    pub fn similarity_pairwise(&self, a: &Embeddings, b: &Embeddings) -> Vec<f32> {
        self.similarity.pairwise(a, b)
    }

    /// Sentence embeddings `[texts.len(), embedding_dimension (or truncate_dim)]`, in input order.
    pub fn encode<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Embeddings> {
        let prepared = self.prepare(texts, options)?;
        self.encode_prepared(&prepared, options)
    }

    /// Tokenizes and sorts `texts` with `options`' prompt: the first half of [`encode`](Self::encode).
    pub fn prepare<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<PreparedTexts> {
        options.validate()?;
        let prompt = self.resolve_prompt(options)?;
        let prompt_length = match prompt.as_deref() {
            Some(p) if !p.is_empty() => Some(self.tokenizer.prompt_length(p)?),
            _ => None,
        };
        let encodings = match prompt.as_deref() {
            Some(p) if !p.is_empty() => {
                let prompted: Vec<String> =
                    texts.iter().map(|t| format!("{p}{}", t.as_ref())).collect();
                self.tokenizer.encode_all(&prompted)?
            }
            _ => self.tokenizer.encode_all(texts)?,
        };
        let mut order: Vec<usize> = (0..texts.len()).collect();
        // Longest first: each batch pads little, and the first batch shows the memory peak.
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        Ok(PreparedTexts {
            encodings,
            order,
            prompt_length,
        })
    }

    /// The second half of [`encode`](Self::encode): the forward passes over prepared texts.
    pub fn encode_prepared(
        &self,
        prepared: &PreparedTexts,
        options: &EncodeOptions,
    ) -> Result<Embeddings> {
        options.validate()?;
        if options.max_active_dims.is_some() {
            return Err(EncodeError::InvalidOption(
                "max_active_dims applies to sparse models; a dense model has truncate_dim".into(),
            ));
        }
        let dim = self.embedding_dimension();
        let mut out = vec![0f32; prepared.len() * dim];
        self.for_each_batch(
            prepared,
            options,
            |batch| {
                self.runner
                    .sentence_embeddings(batch, prepared.prompt_length)
            },
            |batch_rows, _, values| {
                for (k, &row) in batch_rows.iter().enumerate() {
                    out[row * dim..(row + 1) * dim]
                        .copy_from_slice(&values[k * dim..(k + 1) * dim]);
                }
            },
        )?;
        let mut embeddings = Embeddings::new(out, prepared.len(), dim);
        if let Some(d) = options.truncate_dim {
            embeddings.truncate_dim(d);
        }
        if options.normalize_embeddings {
            embeddings.normalize();
        }
        Ok(embeddings)
    }

    /// A sparse model's forward passes over prepared texts: each batch's `[rows, vocab]` values
    /// become sparse rows at once (`max_active_dims` applied), put back in input order.
    pub(crate) fn encode_sparse_prepared(
        &self,
        prepared: &PreparedTexts,
        options: &EncodeOptions,
        max_active_dims: Option<usize>,
    ) -> Result<SparseEmbeddings> {
        options.validate()?;
        let dim = self.embedding_dimension();
        // Rows arrive sorted by length; each is kept sparse until they are put in order.
        let mut rows: Vec<Option<SparseEmbeddings>> = vec![None; prepared.len()];
        self.for_each_batch(
            prepared,
            options,
            |batch| {
                self.runner
                    .sentence_embeddings(batch, prepared.prompt_length)
            },
            |batch_rows, _, values| {
                for (k, &row) in batch_rows.iter().enumerate() {
                    let mut sparse = SparseEmbeddings::new(dim);
                    sparse.push_dense(&values[k * dim..(k + 1) * dim], max_active_dims);
                    rows[row] = Some(sparse);
                }
            },
        )?;
        let mut out = SparseEmbeddings::new(dim);
        for row in &rows {
            out.extend(row.as_ref().expect("for_each_batch covers every row"));
        }
        Ok(out)
    }

    /// `encode` with the model's query prompt (`prompts["query"]`), as ST's `encode_query`.
    pub fn encode_query<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Embeddings> {
        self.encode(texts, &self.with_task_prompt(options, &["query"]))
    }

    /// `encode` with the first of the `document`, `passage`, `corpus` prompts, as ST's `encode_document`.
    pub fn encode_document<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Embeddings> {
        self.encode(
            texts,
            &self.with_task_prompt(options, &["document", "passage", "corpus"]),
        )
    }

    /// ST's `output_value="token_embeddings"`: one `[tokens, hidden]` matrix per text
    /// (special and prompt tokens included, padding excluded). A `StaticEmbedding` model has
    /// none, as in ST.
    pub fn encode_tokens<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Vec<Embeddings>> {
        if self.runner.model().static_vocab_size().is_some() {
            return Err(EncodeError::InvalidOption(
                "a StaticEmbedding model gives sentence embeddings only, no token embeddings"
                    .into(),
            ));
        }
        let prepared = self.prepare(texts, options)?;
        let hidden = self.runner.model().hidden_size();
        let mut out = vec![Embeddings::default(); texts.len()];
        self.for_each_batch(
            &prepared,
            options,
            |batch| self.runner.token_embeddings(batch),
            |batch_rows, batch, values| {
                let s = batch.seq_len;
                for (k, &row) in batch_rows.iter().enumerate() {
                    let len = batch.mask[k * s..(k + 1) * s]
                        .iter()
                        .filter(|&&m| m != 0)
                        .count();
                    let start = k * s * hidden;
                    out[row] =
                        Embeddings::new(values[start..start + len * hidden].to_vec(), len, hidden);
                }
            },
        )?;
        Ok(out)
    }

    /// Runs `forward` on each batch (batches follow `batch_size` and `max_batch_tokens`) and
    /// hands `store` the batch's input rows, the padded batch and `forward`'s values. With batch
    /// threads the forwards overlap and `store` sees the batches in the order they finish.
    fn for_each_batch(
        &self,
        prepared: &PreparedTexts,
        options: &EncodeOptions,
        forward: impl Fn(&TokenBatch) -> Result<Vec<f32>> + Sync,
        mut store: impl FnMut(&[usize], &TokenBatch, Vec<f32>),
    ) -> Result<()> {
        let lengths: Vec<usize> = prepared
            .order
            .iter()
            .map(|&i| prepared.encodings[i].len())
            .collect();
        let budget = options.max_batch_tokens.unwrap_or(usize::MAX);
        let mut bounds = Vec::new();
        let mut start = 0;
        while start < lengths.len() {
            let end = start + next_batch_len(&lengths[start..], options.batch_size, budget);
            bounds.push(start..end);
            start = end;
        }
        let run = |range: &std::ops::Range<usize>| -> Result<(TokenBatch, Vec<f32>)> {
            let rows = &prepared.order[range.clone()];
            let encodings: Vec<&Encoding> = rows.iter().map(|&i| &prepared.encodings[i]).collect();
            let batch = self.tokenizer.batch(&encodings, self.pad_to_multiple);
            let values = forward(&batch)?;
            Ok((batch, values))
        };
        match self
            .batch_threads
            .as_ref()
            .filter(|_| self.batches_in_flight > 1)
        {
            None => {
                for range in &bounds {
                    let (batch, values) = run(range)?;
                    store(&prepared.order[range.clone()], &batch, values);
                }
                Ok(())
            }
            Some(threads) => {
                // Each task takes the next batch when its previous one is done, so the batches
                // in flight never exceed the tasks; results come back as they finish.
                let next = std::sync::atomic::AtomicUsize::new(0);
                let (sender, receiver) = std::sync::mpsc::channel();
                threads.in_place_scope(|scope| {
                    for _ in 0..self.batches_in_flight {
                        let (next, bounds, sender, run) = (&next, &bounds, sender.clone(), &run);
                        scope.spawn(move |_| {
                            loop {
                                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let Some(range) = bounds.get(i) else { break };
                                let result = run(range);
                                let failed = result.is_err();
                                if sender.send((i, result)).is_err() || failed {
                                    // Stop the others early: no batch after a failure is needed.
                                    next.store(bounds.len(), std::sync::atomic::Ordering::Relaxed);
                                    break;
                                }
                            }
                        });
                    }
                    drop(sender);
                    for (i, result) in receiver {
                        let (batch, values) = result?;
                        store(&prepared.order[bounds[i].clone()], &batch, values);
                    }
                    Ok(())
                })
            }
        }
    }

    /// ST's rule: an explicit prompt wins, then `prompt_name`, then the model's default prompt.
    pub(crate) fn resolve_prompt(&self, options: &EncodeOptions) -> Result<Option<String>> {
        let folder = self.folder();
        if let Some(prompt) = &options.prompt {
            return Ok(Some(prompt.clone()));
        }
        match options
            .prompt_name
            .as_ref()
            .or(folder.default_prompt_name.as_ref())
        {
            Some(name) => folder.prompts.get(name).cloned().map(Some).ok_or_else(|| {
                EncodeError::InvalidOption(format!(
                    "prompt name {name:?} is not among the model's prompts ({:?})",
                    folder.prompts.keys().collect::<Vec<_>>()
                ))
            }),
            None => Ok(None),
        }
    }

    pub(crate) fn with_task_prompt(
        &self,
        options: &EncodeOptions,
        names: &[&str],
    ) -> EncodeOptions {
        let mut options = options.clone();
        if options.prompt.is_none() && options.prompt_name.is_none() {
            let prompts = &self.folder().prompts;
            options.prompt_name = names
                .iter()
                .find(|n| prompts.contains_key(**n))
                .map(|n| n.to_string());
        }
        options
    }
}
