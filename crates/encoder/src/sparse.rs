//! Sparse (SPLADE) embeddings the way sentence-transformers' `SparseEncoder` computes them:
//! the same tokenize → batch → transformer path as dense models, then the MLM head and
//! SpladePooling, each batch's rows turned into sparse rows at once.

use std::path::Path;

use pool_encode_model::{
    ModelFolder, ModelKind, Pipeline, SparseStaticEmbeddingConfig, weights::Weights,
};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{EncodeError, Result};
use crate::{
    Device, EncodeOptions, Precision, PreparedTexts, SentenceEncoder, SimilarityFn,
    SparseEmbeddings, Sparsity, resolve_model,
};

/// Which of a model's routes encodes the texts (ST's `task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    /// `encode`: the model's main (document) route.
    #[default]
    Default,
    Query,
    Document,
}

/// A loaded SPLADE model, ready to encode on one device.
///
/// ```no_run
/// use pool_encode_encoder::{EncodeOptions, SparseEncoder};
/// let encoder = SparseEncoder::load("models/splade", "cpu".parse()?)?;
/// let rows = encoder.encode(&["A sentence."], &EncodeOptions::default())?;
/// println!("{:?}", encoder.decode(&rows, Some(5)));
/// # Ok::<(), pool_encode_encoder::EncodeError>(())
/// ```
pub struct SparseEncoder {
    /// The transformer route: tokenization, batching and the forward passes.
    encoder: SentenceEncoder,
    /// An inference-free model's query route.
    query: Option<StaticEmbedding>,
    max_active_dims: Option<usize>,
}

impl SparseEncoder {
    pub fn load(model: impl AsRef<Path>, device: Device) -> Result<Self> {
        Self::load_with_precision(model, device, Precision::F32)
    }

    pub fn load_with_precision(
        model: impl AsRef<Path>,
        device: Device,
        precision: Precision,
    ) -> Result<Self> {
        let path = resolve_model(model.as_ref())?;
        let folder = ModelFolder::load_as(&path, ModelKind::Sparse)?;
        Self::from_folder(&folder, device, precision)
    }

    pub fn from_folder(folder: &ModelFolder, device: Device, precision: Precision) -> Result<Self> {
        let Pipeline::Splade { query, .. } = &folder.pipeline else {
            return Err(EncodeError::InvalidOption(format!(
                "{} is a dense model (Pooling, no SpladePooling): encode it with SentenceEncoder (pool-encode: --kind dense)",
                folder.root.display()
            )));
        };
        let encoder = SentenceEncoder::load_any(folder, device, precision, SimilarityFn::Dot)?;
        let query = query
            .as_ref()
            .map(|config| StaticEmbedding::load(config, encoder.embedding_dimension()))
            .transpose()?;
        Ok(SparseEncoder {
            encoder,
            query,
            max_active_dims: folder.max_active_dims,
        })
    }

    pub fn device(&self) -> Device {
        self.encoder.device()
    }

    pub fn precision(&self) -> Precision {
        self.encoder.precision()
    }

    /// Width of every row: the vocabulary size.
    pub fn embedding_dimension(&self) -> usize {
        self.encoder.embedding_dimension()
    }

    pub fn max_seq_length(&self) -> usize {
        self.encoder.max_seq_length()
    }

    pub fn set_max_seq_length(&mut self, max_seq_length: usize) -> Result<()> {
        self.encoder.set_max_seq_length(max_seq_length)
    }

    /// See [`SentenceEncoder::set_concurrent_batches`].
    pub fn set_concurrent_batches(&mut self, batches: usize) -> Result<()> {
        self.encoder.set_concurrent_batches(batches)
    }

    /// The model's `max_active_dims` (config_sentence_transformers.json, or set here): rows keep
    /// their largest entries only, unless a call's options say otherwise.
    pub fn max_active_dims(&self) -> Option<usize> {
        self.max_active_dims
    }

    pub fn set_max_active_dims(&mut self, max_active_dims: Option<usize>) -> Result<()> {
        if max_active_dims == Some(0) {
            return Err(EncodeError::InvalidOption(
                "max_active_dims must be at least 1".into(),
            ));
        }
        self.max_active_dims = max_active_dims;
        Ok(())
    }

    /// `dot` unless the model names another similarity function.
    pub fn similarity_fn(&self) -> SimilarityFn {
        self.encoder.similarity_fn()
    }

    pub fn folder(&self) -> &ModelFolder {
        self.encoder.folder()
    }

    /// Whether queries skip the transformer (an inference-free model).
    pub fn is_inference_free(&self) -> bool {
        self.query.is_some()
    }

    /// Sparse rows in input order, through the model's main route.
    pub fn encode<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<SparseEmbeddings> {
        self.encode_task(texts, options, Task::Default)
    }

    /// ST's `encode_query`: the `query` prompt unless one is given, and the query route.
    pub fn encode_query<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<SparseEmbeddings> {
        self.encode_task(texts, options, Task::Query)
    }

    /// ST's `encode_document`: the first of the `document`, `passage`, `corpus` prompts unless
    /// one is given, and the document route.
    pub fn encode_document<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<SparseEmbeddings> {
        self.encode_task(texts, options, Task::Document)
    }

    /// Tokenizes and sorts `texts` for the main route: the CPU half of [`encode`](Self::encode).
    pub fn prepare<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<PreparedTexts> {
        check_sparse_options(options)?;
        self.encoder.prepare(texts, options)
    }

    /// The forward passes over prepared texts: the second half of [`encode`](Self::encode).
    pub fn encode_prepared(
        &self,
        prepared: &PreparedTexts,
        options: &EncodeOptions,
    ) -> Result<SparseEmbeddings> {
        check_sparse_options(options)?;
        let max_active_dims = options.max_active_dims.or(self.max_active_dims);
        self.encoder
            .encode_sparse_prepared(prepared, options, max_active_dims)
    }

    /// `encode` through the route of `task` ([`encode_query`](Self::encode_query) and
    /// [`encode_document`](Self::encode_document) are this with their task).
    pub fn encode_task<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
        task: Task,
    ) -> Result<SparseEmbeddings> {
        check_sparse_options(options)?;
        let options = match task {
            Task::Default => options.clone(),
            Task::Query => self.encoder.with_task_prompt(options, &["query"]),
            Task::Document => self
                .encoder
                .with_task_prompt(options, &["document", "passage", "corpus"]),
        };
        match (&self.query, task) {
            (Some(query), Task::Query) => {
                options.validate()?;
                let prompt = self.encoder.resolve_prompt(&options)?;
                let max_active_dims = options.max_active_dims.or(self.max_active_dims);
                query.encode(texts, prompt.as_deref(), max_active_dims)
            }
            _ => self.encode_prepared(&self.prepare(texts, &options)?, &options),
        }
    }

    /// ST's `sparsity()`.
    pub fn sparsity(embeddings: &SparseEmbeddings) -> Sparsity {
        embeddings.sparsity()
    }

    /// ST's `decode`: each row's `(token, weight)` pairs by descending weight, `top_k` at most.
    pub fn decode(
        &self,
        embeddings: &SparseEmbeddings,
        top_k: Option<usize>,
    ) -> Vec<Vec<(String, f32)>> {
        let tokenizer = self.encoder.tokenizer().inner();
        embeddings
            .iter()
            .map(|row| {
                let mut entries: Vec<(u32, f32)> = row
                    .indices
                    .iter()
                    .copied()
                    .zip(row.values.iter().copied())
                    .collect();
                entries.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                entries.truncate(top_k.unwrap_or(usize::MAX));
                entries
                    .into_iter()
                    .map(|(id, w)| {
                        let token = tokenizer
                            .id_to_token(id)
                            .unwrap_or_else(|| format!("[{id}]"));
                        (token, w)
                    })
                    .collect()
            })
            .collect()
    }

    /// `[a.rows, b.rows]` scores with the model's similarity function.
    pub fn similarity(&self, a: &SparseEmbeddings, b: &SparseEmbeddings) -> crate::Embeddings {
        a.similarity(b, self.similarity_fn())
    }

    pub fn similarity_pairwise(&self, a: &SparseEmbeddings, b: &SparseEmbeddings) -> Vec<f32> {
        a.similarity_pairwise(b, self.similarity_fn())
    }
}

fn check_sparse_options(options: &EncodeOptions) -> Result<()> {
    if options.truncate_dim.is_some() || options.normalize_embeddings {
        return Err(EncodeError::InvalidOption(
            "truncate_dim and normalize_embeddings apply to dense models; a sparse model has max_active_dims".into(),
        ));
    }
    Ok(())
}

/// ST's `SparseStaticEmbedding`: each token present in the text (no special tokens) gets its
/// vocabulary entry's static weight; nothing runs on a device.
struct StaticEmbedding {
    tokenizer: Tokenizer,
    weights: Vec<f32>,
    /// ST scatters the attention mask into a presence vector, so a batch's padding writes 0
    /// over the pad token's entry: a literal "[PAD]" in a text never counts (unless it is
    /// the batch's longest text). We never count it.
    pad_id: u32,
}

impl StaticEmbedding {
    fn load(config: &SparseStaticEmbeddingConfig, vocab: usize) -> Result<Self> {
        let path = config.tokenizer_path();
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| EncodeError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        tokenizer.with_padding(None);
        let truncation = config.max_length.map(|max_length| TruncationParams {
            max_length,
            ..Default::default()
        });
        tokenizer
            .with_truncation(truncation)
            .map_err(|e| EncodeError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let weights = Weights::open(&config.weights_path(), "")?.values("weight", &[vocab])?;
        let pad_id = crate::tokenizer::pad_token_id(&config.tokenizer_config, &tokenizer);
        Ok(StaticEmbedding {
            tokenizer,
            weights,
            pad_id,
        })
    }

    fn encode<S: AsRef<str>>(
        &self,
        texts: &[S],
        prompt: Option<&str>,
        max_active_dims: Option<usize>,
    ) -> Result<SparseEmbeddings> {
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{}", prompt.unwrap_or_default(), t.as_ref()))
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch_fast(inputs, false)
            .map_err(|e| EncodeError::Tokenize(e.to_string()))?;
        let mut rows = SparseEmbeddings::new(self.weights.len());
        let mut row = vec![0f32; self.weights.len()];
        for encoding in &encodings {
            let ids = encoding.get_ids();
            for &id in ids.iter().filter(|&&id| id != self.pad_id) {
                if let Some(slot) = row.get_mut(id as usize) {
                    *slot = self.weights[id as usize];
                }
            }
            rows.push_dense(&row, max_active_dims);
            for &id in ids {
                if let Some(slot) = row.get_mut(id as usize) {
                    *slot = 0.0;
                }
            }
        }
        Ok(rows)
    }
}
