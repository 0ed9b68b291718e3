//! Sentence embeddings the way sentence-transformers computes them: tokenize → batch →
//! transformer → pooling → Dense/Normalize → `truncate_dim` / `normalize_embeddings`.
//!
//! ```no_run
//! use pool_encode_encoder::{EncodeOptions, SentenceEncoder};
//! let encoder = SentenceEncoder::load("models/all-MiniLM-L6-v2", "cpu".parse()?)?;
//! let embeddings = encoder.encode(&["A sentence.", "Another one."], &EncodeOptions::default())?;
//! let scores = encoder.similarity(&embeddings, &embeddings);
//! # Ok::<(), pool_encode_encoder::EncodeError>(())
//! ```

mod device;
mod embeddings;
mod error;
mod similarity;
mod tokenizer;

use std::path::Path;

use burn::tensor::backend::Backend;
use pool_encode_model::{Cpu, ModelFolder, SentenceModel};
use tokenizers::Encoding;

pub use device::Device;
pub use embeddings::Embeddings;
pub use error::{EncodeError, Result};
pub use pool_encode_model as model;
pub use similarity::SimilarityFn;
pub use tokenizer::TextTokenizer;

/// Options of one `encode` call, named as in ST's `encode`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncodeOptions {
    pub batch_size: usize,
    pub normalize_embeddings: bool,
    pub truncate_dim: Option<usize>,
    /// A key of the model's `prompts`.
    pub prompt_name: Option<String>,
    /// A literal prompt; wins over `prompt_name`.
    pub prompt: Option<String>,
}

impl EncodeOptions {
    /// Width of the rows `encode` returns for a model of `model_dimension` (`truncate_dim` applied).
    pub fn output_dimension(&self, model_dimension: usize) -> usize {
        self.truncate_dim
            .map_or(model_dimension, |d| d.min(model_dimension))
    }
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            batch_size: 32,
            normalize_embeddings: false,
            truncate_dim: None,
            prompt_name: None,
            prompt: None,
        }
    }
}

/// A loaded model, ready to encode on one device. `B` defaults to the CPU backend.
pub struct SentenceEncoder<B: Backend = Cpu> {
    model: SentenceModel<B>,
    tokenizer: TextTokenizer,
    device: B::Device,
    similarity: SimilarityFn,
    /// Set for `cpu:N`: every forward runs inside this pool of N threads.
    threads: Option<rayon::ThreadPool>,
}

impl SentenceEncoder<Cpu> {
    /// Loads a model folder (or, with the `hub` feature, a hub model id) onto `device`.
    pub fn load(model: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = resolve_model(model.as_ref())?;
        let threads = match device {
            Device::Cpu { threads: None } => None,
            Device::Cpu { threads: Some(n) } => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| EncodeError::InvalidOption(format!("cpu:{n}: {e}")))?,
            ),
            other => {
                return Err(EncodeError::InvalidOption(format!(
                    "device {other} needs a build with its backend feature; this build has the CPU backend only"
                )));
            }
        };
        let folder = ModelFolder::load(&path)?;
        let mut encoder = Self::from_folder(&folder, Default::default())?;
        encoder.threads = threads;
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

impl<B: Backend> SentenceEncoder<B> {
    pub fn from_folder(folder: &ModelFolder, device: B::Device) -> Result<Self> {
        let model = SentenceModel::load(folder, &device)?;
        let tokenizer = TextTokenizer::load(folder)?;
        let similarity = match folder.similarity_fn_name.as_deref() {
            None => SimilarityFn::Cosine,
            Some(name) => SimilarityFn::parse(name).ok_or_else(|| {
                pool_encode_model::ModelError::config(
                    &folder.root.join("config_sentence_transformers.json"),
                    format!("unknown similarity_fn_name {name:?}"),
                )
            })?,
        };
        Ok(SentenceEncoder {
            model,
            tokenizer,
            device,
            similarity,
            threads: None,
        })
    }

    pub fn embedding_dimension(&self) -> usize {
        self.model.embedding_dimension()
    }

    pub fn max_seq_length(&self) -> usize {
        self.tokenizer.max_seq_length()
    }

    /// Changes the truncation length; it cannot exceed what the position table encodes.
    pub fn set_max_seq_length(&mut self, max_seq_length: usize) -> Result<()> {
        let limit = self.model.folder().architecture.max_input_tokens();
        if max_seq_length == 0 || max_seq_length > limit {
            return Err(EncodeError::InvalidOption(format!(
                "max_seq_length {max_seq_length} is outside 1..={limit} (this model's position limit)"
            )));
        }
        self.tokenizer.set_max_seq_length(max_seq_length)
    }

    pub fn similarity_fn(&self) -> SimilarityFn {
        self.similarity
    }

    pub fn folder(&self) -> &ModelFolder {
        self.model.folder()
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
        if options.truncate_dim == Some(0) {
            return Err(EncodeError::InvalidOption(
                "truncate_dim must be at least 1".into(),
            ));
        }
        let prompt = self.resolve_prompt(options)?;
        let prompt_length = match prompt.as_deref() {
            Some(p) if !p.is_empty() => Some(self.tokenizer.prompt_length(p)?),
            _ => None,
        };
        let dim = self.embedding_dimension();
        let mut out = vec![0f32; texts.len() * dim];
        self.for_each_batch(texts, prompt.as_deref(), options, |batch_rows, batch| {
            let values = self.run(|| {
                self.model
                    .sentence_embeddings(batch, prompt_length, &self.device)
                    .into_data()
            });
            let values = values.as_slice::<f32>().expect("f32 embeddings");
            for (k, &row) in batch_rows.iter().enumerate() {
                out[row * dim..(row + 1) * dim].copy_from_slice(&values[k * dim..(k + 1) * dim]);
            }
        })?;
        let mut embeddings = Embeddings::new(out, texts.len(), dim);
        if let Some(d) = options.truncate_dim {
            embeddings.truncate_dim(d);
        }
        if options.normalize_embeddings {
            embeddings.normalize();
        }
        Ok(embeddings)
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
    /// (special and prompt tokens included, padding excluded).
    pub fn encode_tokens<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Vec<Embeddings>> {
        let prompt = self.resolve_prompt(options)?;
        let hidden = self.model.hidden_size();
        let mut out = vec![Embeddings::default(); texts.len()];
        self.for_each_batch(texts, prompt.as_deref(), options, |batch_rows, batch| {
            let values = self.run(|| self.model.token_embeddings(batch, &self.device).into_data());
            let values = values.as_slice::<f32>().expect("f32 token embeddings");
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
        })?;
        Ok(out)
    }

    /// Tokenizes, sorts by length (longest first, so each batch pads little), and calls `f`
    /// with the input rows of each batch and the padded batch.
    fn for_each_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        prompt: Option<&str>,
        options: &EncodeOptions,
        mut f: impl FnMut(&[usize], &pool_encode_model::TokenBatch),
    ) -> Result<()> {
        if options.batch_size == 0 {
            return Err(EncodeError::InvalidOption(
                "batch_size must be at least 1".into(),
            ));
        }
        let encodings: Vec<Encoding> = texts
            .iter()
            .map(|t| match prompt {
                Some(p) if !p.is_empty() => self.tokenizer.encode(&format!("{p}{}", t.as_ref())),
                _ => self.tokenizer.encode(t.as_ref()),
            })
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        for rows in order.chunks(options.batch_size) {
            let batch_encodings: Vec<&Encoding> = rows.iter().map(|&i| &encodings[i]).collect();
            let batch = self.tokenizer.batch(&batch_encodings);
            f(rows, &batch);
        }
        Ok(())
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.threads {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// ST's rule: an explicit prompt wins, then `prompt_name`, then the model's default prompt.
    fn resolve_prompt(&self, options: &EncodeOptions) -> Result<Option<String>> {
        let folder = self.model.folder();
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

    fn with_task_prompt(&self, options: &EncodeOptions, names: &[&str]) -> EncodeOptions {
        let mut options = options.clone();
        if options.prompt.is_none() && options.prompt_name.is_none() {
            let prompts = &self.model.folder().prompts;
            options.prompt_name = names
                .iter()
                .find(|n| prompts.contains_key(**n))
                .map(|n| n.to_string());
        }
        options
    }
}
