//! A model folder in the Hugging Face / sentence-transformers layout, read into a description of
//! the module pipeline. Both ST config formats are accepted:
//! - old (≤ 5.3): short class paths in `modules.json`, `pooling_mode_*_tokens` booleans and
//!   `word_embedding_dimension`, `max_seq_length` in `sentence_bert_config.json`;
//! - new (≥ 5.4): full class paths, `"pooling_mode": "mean"` (or a list), `embedding_dimension`,
//!   the max length as `model_max_length` in `tokenizer_config.json`.
//!
//! A plain Hugging Face folder (no `modules.json`) gets mean pooling, as ST does.
//!
//! The first module is a transformer, or ST's `StaticEmbedding` (a vector per vocabulary entry,
//! averaged over a text's tokens: model2vec / potion models, static-retrieval-mrl).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::ArchitectureConfig;
use crate::error::{ModelError, Result, read_json};
use crate::modules::{
    DenseActivation, DenseConfig, PoolingConfig, PoolingMode, SpladeActivation, SpladeConfig,
    SpladeStrategy,
};

/// One step after the transformer, in `modules.json` order.
#[derive(Debug, Clone)]
pub enum HeadConfig {
    Dense(DenseConfig),
    Normalize,
}

/// What follows the transformer: the two kinds of model sentence-transformers has.
#[derive(Debug, Clone)]
pub enum Pipeline {
    /// A `SentenceTransformer`: Pooling, then Dense / Normalize heads.
    Dense {
        pooling: PoolingConfig,
        heads: Vec<HeadConfig>,
    },
    /// A `SparseEncoder` (SPLADE): the MLM head's logits, then SpladePooling. `query` is the
    /// query route of an inference-free model (ST `Router` with `SparseStaticEmbedding`).
    Splade {
        pooling: SpladeConfig,
        query: Option<SparseStaticEmbeddingConfig>,
    },
}

/// Which pipeline a folder without `modules.json` (a plain Hugging Face folder) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Mean pooling, as `SentenceTransformer` does.
    Dense,
    /// SpladePooling (max), as `SparseEncoder` does for a `*ForMaskedLM` folder.
    Sparse,
}

/// The first module: what turns a text's tokens into vectors.
#[derive(Debug, Clone)]
pub enum InputModule {
    /// A Hugging Face transformer (`Transformer`, `MLMTransformer`); boxed, as its config is
    /// much larger than a table's.
    Transformer(Box<TransformerModule>),
    /// ST's `StaticEmbedding`: a vector per vocabulary entry, averaged over the text's tokens
    /// (tokenized without special tokens); no transformer. Its output is what mean pooling of
    /// those vectors gives, so its pipeline is [`Pipeline::Dense`] with mean pooling.
    Static(StaticTable),
}

/// A transformer module's folder and settings.
#[derive(Debug, Clone)]
pub struct TransformerModule {
    /// Its folder (config.json, weights, tokenizer).
    pub dir: PathBuf,
    pub architecture: ArchitectureConfig,
    /// The effective max length, computed as ST does, then capped by the position table.
    pub max_seq_length: usize,
    pub do_lower_case: bool,
    /// Its tokenizer_config.json (`Null` if none): transformers' tokenizer class and its
    /// options, the pad token, `model_max_length`.
    pub tokenizer_config: Value,
    /// The modeling code config.json's `auto_map` names for `AutoModel` (gte-Qwen2's
    /// `modeling_qwen.Qwen2Model`), which ST runs only with `trust_remote_code`. What runs here
    /// is transformers' own class for the model_type, as ST runs it by default: a caller may
    /// want to say so.
    pub remote_code: Option<String>,
}

/// A `StaticEmbedding` module's folder: `tokenizer.json` (used as it is, its truncation
/// included, as ST uses it) and `model.safetensors` with the table as `embedding.weight`, or in
/// model2vec's layout (`embeddings`, optionally a token `mapping` and per-token `weights`).
#[derive(Debug, Clone)]
pub struct StaticTable {
    pub dir: PathBuf,
}

/// ST's `SparseStaticEmbedding`: a weight per vocabulary entry (IDF-like), given to each token
/// present in the text, tokenized without special tokens.
#[derive(Debug, Clone)]
pub struct SparseStaticEmbeddingConfig {
    pub dir: PathBuf,
    /// Truncation length (the tokenizer's `model_max_length`); `None`: no limit.
    pub max_length: Option<usize>,
    /// Its tokenizer_config.json (`Null` if none): the pad token.
    pub tokenizer_config: Value,
}

impl SparseStaticEmbeddingConfig {
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
}

#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub root: PathBuf,
    pub input: InputModule,
    pub pipeline: Pipeline,
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    pub similarity_fn_name: Option<String>,
    /// A sparse model's `max_active_dims` (config_sentence_transformers.json).
    pub max_active_dims: Option<usize>,
}

#[derive(Deserialize, Clone)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

impl ModuleEntry {
    /// The class name without its module path (old and new ST paths differ only there).
    fn class(&self) -> &str {
        self.kind.rsplit('.').next().unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
    /// ≥ 5.4: `"fill-mask"` for the transformer of a SPLADE model.
    transformer_task: Option<String>,
}

#[derive(Deserialize, Default)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
    similarity_fn_name: Option<String>,
    max_active_dims: Option<usize>,
}

/// `modules.json` read into the transformer's folder and the pipeline's parts.
#[derive(Default)]
struct Modules {
    transformer: Option<PathBuf>,
    /// The folder of a `StaticEmbedding` first module.
    static_table: Option<PathBuf>,
    /// The transformer is a masked-language model (`MLMTransformer`, or task `fill-mask`).
    masked_lm: bool,
    pooling: Option<PoolingConfig>,
    heads: Vec<HeadConfig>,
    splade: Option<SpladeConfig>,
    query: Option<SparseStaticEmbeddingConfig>,
}

const SUPPORTED_MODULES: &str = "Transformer, StaticEmbedding, Pooling, Dense, Normalize, MLMTransformer, SpladePooling, and a Router whose query route is a SparseStaticEmbedding";

impl Modules {
    fn read(&mut self, entries: &[(PathBuf, ModuleEntry)], source: &Path) -> Result<()> {
        for (dir, entry) in entries {
            match entry.class() {
                "Transformer" | "MLMTransformer"
                    if self.transformer.is_none() && self.static_table.is_none() =>
                {
                    let sbert_path = dir.join("sentence_bert_config.json");
                    let sbert: SentenceBertConfig = if sbert_path.exists() {
                        read_json(&sbert_path)?
                    } else {
                        SentenceBertConfig::default()
                    };
                    self.masked_lm = entry.class() == "MLMTransformer"
                        || sbert.transformer_task.as_deref() == Some("fill-mask");
                    self.transformer = Some(dir.clone());
                }
                "StaticEmbedding" if self.transformer.is_none() && self.static_table.is_none() => {
                    self.static_table = Some(dir.clone());
                }
                "Pooling" => self.pooling = Some(PoolingConfig::load(&dir.join("config.json"))?),
                "Dense" => self.heads.push(HeadConfig::Dense(DenseConfig::load(dir)?)),
                "Normalize" => self.heads.push(HeadConfig::Normalize),
                "SpladePooling" => self.splade = Some(load_splade(&dir.join("config.json"))?),
                "Router" if entries.len() == 1 => self.read_router(dir)?,
                _ => {
                    return Err(ModelError::config(
                        source,
                        format!(
                            "unsupported module type {:?} (supported: {SUPPORTED_MODULES})",
                            entry.kind
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// ST's `Router` (router_config.json): one route runs the transformer pipeline; a
    /// `query` route may instead be a lone `SparseStaticEmbedding` (inference-free SPLADE).
    fn read_router(&mut self, dir: &Path) -> Result<()> {
        #[derive(Deserialize)]
        struct RouterConfig {
            types: BTreeMap<String, String>,
            structure: BTreeMap<String, Vec<String>>,
            #[serde(default)]
            parameters: RouterParameters,
        }
        #[derive(Deserialize, Default)]
        struct RouterParameters {
            default_route: Option<String>,
        }
        let path = dir.join("router_config.json");
        let config: RouterConfig = read_json(&path)?;
        let entries = |route: &str| -> Result<Vec<(PathBuf, ModuleEntry)>> {
            config.structure[route]
                .iter()
                .map(|name| {
                    let kind = config.types.get(name).ok_or_else(|| {
                        ModelError::config(&path, format!("module {name:?} has no entry in types"))
                    })?;
                    Ok((
                        dir.join(name),
                        ModuleEntry {
                            path: name.clone(),
                            kind: kind.clone(),
                        },
                    ))
                })
                .collect()
        };
        let unsupported = |why: String| {
            Err(ModelError::config(
                &path,
                format!("{why} (supported: {SUPPORTED_MODULES})"),
            ))
        };
        let mut main_route = None;
        for route in config.structure.keys() {
            let modules = entries(route)?;
            match modules.as_slice() {
                [(module_dir, entry)] if entry.class() == "SparseStaticEmbedding" => {
                    if route != "query" {
                        return unsupported(format!(
                            "a SparseStaticEmbedding on route {route:?}; only the query route may be one"
                        ));
                    }
                    self.query = Some(load_static_embedding(module_dir)?);
                }
                _ if main_route.is_none() => main_route = Some((route.clone(), modules)),
                _ => {
                    return unsupported(format!(
                        "more than one route runs a transformer ({:?} and {route:?})",
                        main_route.as_ref().map(|(r, _)| r)
                    ));
                }
            }
        }
        let Some((route, modules)) = main_route else {
            return unsupported("no route runs a transformer".into());
        };
        if let Some(default) = &config.parameters.default_route
            && *default != route
            && default != "query"
        {
            return unsupported(format!(
                "default route {default:?} is neither the transformer route {route:?} nor the query route"
            ));
        }
        self.read(&modules, &path)
    }
}

fn load_splade(path: &Path) -> Result<SpladeConfig> {
    #[derive(Deserialize)]
    struct Raw {
        pooling_strategy: Option<String>,
        activation_function: Option<String>,
    }
    let raw: Raw = read_json(path)?;
    let strategy = match raw.pooling_strategy.as_deref().unwrap_or("max") {
        "max" => SpladeStrategy::Max,
        "sum" => SpladeStrategy::Sum,
        other => {
            return Err(ModelError::config(
                path,
                format!("pooling_strategy {other:?} is not \"max\" or \"sum\""),
            ));
        }
    };
    let activation = match raw.activation_function.as_deref().unwrap_or("relu") {
        "relu" => SpladeActivation::Relu,
        "log1p_relu" => SpladeActivation::Log1pRelu,
        other => {
            return Err(ModelError::config(
                path,
                format!("activation_function {other:?} is not \"relu\" or \"log1p_relu\""),
            ));
        }
    };
    Ok(SpladeConfig {
        strategy,
        activation,
    })
}

/// `dir`'s tokenizer_config.json, `Null` if it has none.
fn read_tokenizer_config(dir: &Path) -> Result<Value> {
    let path = dir.join("tokenizer_config.json");
    if path.exists() {
        read_json(&path)
    } else {
        Ok(Value::Null)
    }
}

fn load_static_embedding(dir: &Path) -> Result<SparseStaticEmbeddingConfig> {
    let config_path = dir.join("config.json");
    if config_path.exists() {
        let config: serde_json::Map<String, Value> = read_json(&config_path)?;
        if config.contains_key("path") {
            return Err(ModelError::config(
                &config_path,
                "SparseStaticEmbedding from an IDF json file is not supported; save the model with ST so that its weights are in model.safetensors",
            ));
        }
    }
    let tokenizer_config = read_tokenizer_config(dir)?;
    let max_length = tokenizer_config
        .get("model_max_length")
        .and_then(Value::as_f64)
        .filter(|n| (1.0..1e9).contains(n))
        .map(|n| n as usize);
    let config = SparseStaticEmbeddingConfig {
        dir: dir.to_path_buf(),
        max_length,
        tokenizer_config,
    };
    for file in [config.weights_path(), config.tokenizer_path()] {
        if !file.exists() {
            return Err(ModelError::MissingFile { path: file });
        }
    }
    Ok(config)
}

impl ModelFolder {
    /// Reads the folder's pipeline from `modules.json`; a plain Hugging Face folder gets mean
    /// pooling, as `SentenceTransformer` gives it.
    pub fn load(root: &Path) -> Result<Self> {
        Self::load_as(root, ModelKind::Dense)
    }

    /// As [`load`](Self::load); a plain Hugging Face folder gets the pipeline of `bare`.
    pub fn load_as(root: &Path, bare: ModelKind) -> Result<Self> {
        if !root.is_dir() {
            return Err(ModelError::MissingFile {
                path: root.to_path_buf(),
            });
        }
        let modules_path = root.join("modules.json");
        let mut modules = Modules::default();
        if modules_path.exists() {
            let entries: Vec<ModuleEntry> = read_json(&modules_path)?;
            let entries: Vec<(PathBuf, ModuleEntry)> = entries
                .into_iter()
                .map(|e| (root.join(&e.path), e))
                .collect();
            modules.read(&entries, &modules_path)?;
        } else {
            modules.transformer = Some(root.to_path_buf());
            modules.masked_lm = bare == ModelKind::Sparse;
        }
        let (input, pipeline) = match (modules.transformer.take(), modules.static_table.take()) {
            (Some(dir), _) => (
                InputModule::Transformer(Box::new(TransformerModule::load(dir)?)),
                modules.pipeline(&modules_path)?,
            ),
            (None, Some(dir)) => {
                let pipeline = match modules {
                    Modules {
                        pooling: None,
                        splade: None,
                        heads,
                        ..
                    } => Pipeline::Dense {
                        pooling: PoolingConfig {
                            modes: vec![PoolingMode::Mean],
                            include_prompt: true,
                        },
                        heads,
                    },
                    _ => {
                        return Err(ModelError::config(
                            &modules_path,
                            "a StaticEmbedding gives sentence embeddings itself: it takes no Pooling or SpladePooling after it",
                        ));
                    }
                };
                (InputModule::Static(StaticTable::load(dir)?), pipeline)
            }
            (None, None) => {
                return Err(ModelError::config(
                    &modules_path,
                    "no Transformer or StaticEmbedding module (it must come first)",
                ));
            }
        };

        let st_path = root.join("config_sentence_transformers.json");
        let st: SentenceTransformersConfig = if st_path.exists() {
            read_json(&st_path)?
        } else {
            SentenceTransformersConfig::default()
        };
        if let Some(name) = &st.default_prompt_name
            && !st.prompts.contains_key(name)
        {
            return Err(ModelError::config(
                &st_path,
                format!("default_prompt_name {name:?} is not among the prompts"),
            ));
        }
        Ok(ModelFolder {
            root: root.to_path_buf(),
            input,
            pipeline,
            prompts: st.prompts,
            default_prompt_name: st.default_prompt_name,
            similarity_fn_name: st.similarity_fn_name,
            max_active_dims: st.max_active_dims,
        })
    }

    pub fn kind(&self) -> ModelKind {
        match self.pipeline {
            Pipeline::Dense { .. } => ModelKind::Dense,
            Pipeline::Splade { .. } => ModelKind::Sparse,
        }
    }

    /// The transformer module; an error for a `StaticEmbedding` model, which has none.
    pub fn transformer(&self) -> Result<&TransformerModule> {
        match &self.input {
            InputModule::Transformer(transformer) => Ok(transformer),
            InputModule::Static(table) => Err(ModelError::config(
                &table.dir,
                "a StaticEmbedding model has no transformer",
            )),
        }
    }

    /// The folder of the first module, which holds the tokenizer and the weights.
    fn input_dir(&self) -> &Path {
        match &self.input {
            InputModule::Transformer(transformer) => &transformer.dir,
            InputModule::Static(table) => &table.dir,
        }
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.input_dir().join("tokenizer.json")
    }

    /// The input module's checkpoint: `model.safetensors`, or the index of a sharded one
    /// (`model.safetensors.index.json`) where there is no single file. A transformer's weights
    /// only: ST saves a `StaticEmbedding` table as one file.
    pub fn weights_path(&self) -> PathBuf {
        let single = self.input_dir().join("model.safetensors");
        let index = self.input_dir().join("model.safetensors.index.json");
        match &self.input {
            InputModule::Transformer(_) if !single.exists() && index.exists() => index,
            _ => single,
        }
    }

    /// The length texts are truncated to, special tokens included; `None` for a
    /// `StaticEmbedding` model, whose texts are as long as its tokenizer file lets them be
    /// (ST: `math.inf`).
    pub fn max_seq_length(&self) -> Option<usize> {
        match &self.input {
            InputModule::Transformer(transformer) => Some(transformer.max_seq_length),
            InputModule::Static(_) => None,
        }
    }
}

impl Modules {
    /// The pipeline after a transformer: SPLADE for a masked-language model with nothing but
    /// SpladePooling after it, else pooling (mean if the folder names none) and heads.
    fn pipeline(self, modules_path: &Path) -> Result<Pipeline> {
        Ok(match self {
            Modules {
                masked_lm: true,
                splade,
                pooling: None,
                heads,
                query,
                ..
            } if heads.is_empty() => Pipeline::Splade {
                pooling: splade.unwrap_or_default(),
                query,
            },
            Modules {
                masked_lm: false,
                splade: None,
                query: None,
                pooling,
                heads,
                ..
            } => Pipeline::Dense {
                pooling: pooling.unwrap_or(PoolingConfig {
                    modes: vec![PoolingMode::Mean],
                    include_prompt: true,
                }),
                heads,
            },
            _ => {
                return Err(ModelError::config(
                    modules_path,
                    "SpladePooling needs a fill-mask (MLM) transformer and no Pooling, Dense or Normalize module",
                ));
            }
        })
    }
}

impl TransformerModule {
    /// The transformer in `dir`: its architecture and tokenizer settings, and the max length
    /// ST computes for it.
    fn load(dir: PathBuf) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: Value = read_json(&config_path)?;
        let architecture = ArchitectureConfig::from_json(&config_path, &config)?;
        let sbert_path = dir.join("sentence_bert_config.json");
        let sbert: SentenceBertConfig = if sbert_path.exists() {
            read_json(&sbert_path)?
        } else {
            SentenceBertConfig::default()
        };
        let tokenizer_config = read_tokenizer_config(&dir)?;
        let max_seq_length =
            resolve_max_seq_length(&dir, &architecture, &sbert, &tokenizer_config)?;
        // A class path, or a [slow, fast] pair as some configs write it.
        let remote_code = match config.get("auto_map").and_then(|m| m.get("AutoModel")) {
            Some(Value::String(class)) => Some(class.clone()),
            Some(Value::Array(classes)) => classes.iter().find_map(Value::as_str).map(Into::into),
            _ => None,
        };
        Ok(TransformerModule {
            dir,
            architecture,
            max_seq_length,
            do_lower_case: sbert.do_lower_case,
            tokenizer_config,
            remote_code,
        })
    }
}

impl StaticTable {
    fn load(dir: PathBuf) -> Result<Self> {
        let table = StaticTable { dir };
        let weights = table.dir.join("model.safetensors");
        if !weights.exists() && table.dir.join("pytorch_model.bin").exists() {
            return Err(ModelError::config(
                &table.dir.join("pytorch_model.bin"),
                "pickled PyTorch weights are not supported; save the model with safetensors",
            ));
        }
        for file in [weights, table.dir.join("tokenizer.json")] {
            if !file.exists() {
                return Err(ModelError::MissingFile { path: file });
            }
        }
        Ok(table)
    }
}

/// ST's rule: `max_seq_length` from sentence_bert_config.json if set; otherwise the tokenizer's
/// `model_max_length` capped at `max_position_embeddings`. We additionally cap at the positions
/// the model can really encode (MPNet loses two to its padding offset), where ST would crash.
fn resolve_max_seq_length(
    dir: &Path,
    architecture: &ArchitectureConfig,
    sbert: &SentenceBertConfig,
    tokenizer_config: &Value,
) -> Result<usize> {
    let limit = architecture.max_input_tokens();
    let from_st = match sbert.max_seq_length {
        Some(n) => n,
        None => {
            let model_max_length = tokenizer_config
                .get("model_max_length")
                .and_then(Value::as_f64);
            let positions = architecture.shape().max_position_embeddings;
            match model_max_length {
                Some(n) if n >= 0.0 && n < positions as f64 => n as usize,
                _ => positions,
            }
        }
    };
    if from_st == 0 {
        return Err(ModelError::config(dir, "max_seq_length must be at least 1"));
    }
    Ok(from_st.min(limit))
}

impl DenseConfig {
    fn load(dir: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Raw {
            in_features: usize,
            out_features: usize,
            #[serde(default = "yes")]
            bias: bool,
            activation_function: Option<String>,
            #[serde(default)]
            use_residual: bool,
        }
        fn yes() -> bool {
            true
        }
        let path = dir.join("config.json");
        let raw: Raw = read_json(&path)?;
        let activation = match raw
            .activation_function
            .as_deref()
            .unwrap_or("torch.nn.modules.activation.Tanh")
        {
            "torch.nn.modules.activation.Tanh" => DenseActivation::Tanh,
            "torch.nn.modules.linear.Identity" => DenseActivation::Identity,
            "torch.nn.modules.activation.ReLU" => DenseActivation::Relu,
            "torch.nn.modules.activation.Sigmoid" => DenseActivation::Sigmoid,
            "torch.nn.modules.activation.GELU" => DenseActivation::Gelu,
            other => {
                return Err(ModelError::config(
                    &path,
                    format!("unsupported Dense activation_function {other:?}"),
                ));
            }
        };
        let weights = dir.join("model.safetensors");
        if !weights.exists() && dir.join("pytorch_model.bin").exists() {
            return Err(ModelError::config(
                &dir.join("pytorch_model.bin"),
                "pickled PyTorch weights are not supported; save the model with safetensors",
            ));
        }
        Ok(DenseConfig {
            weights,
            in_features: raw.in_features,
            out_features: raw.out_features,
            bias: raw.bias,
            activation,
            use_residual: raw.use_residual,
        })
    }
}

impl PoolingConfig {
    fn load(path: &Path) -> Result<Self> {
        let raw: serde_json::Map<String, Value> = read_json(path)?;
        let parse = |name: &str| {
            PoolingMode::parse(name)
                .ok_or_else(|| ModelError::config(path, format!("unknown pooling mode {name:?}")))
        };
        let modes = match raw.get("pooling_mode") {
            Some(Value::String(mode)) => vec![parse(mode)?],
            Some(Value::Array(list)) => list
                .iter()
                .map(|m| {
                    m.as_str()
                        .ok_or_else(|| {
                            ModelError::config(path, "pooling_mode entries must be strings")
                        })
                        .and_then(parse)
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => {
                return Err(ModelError::config(
                    path,
                    "pooling_mode must be a string or a list",
                ));
            }
            None => {
                // Legacy booleans, concatenated in ST's fixed order; none set means mean.
                let modes: Vec<PoolingMode> = PoolingMode::LEGACY_KEYS
                    .iter()
                    .filter(|(key, _)| raw.get(*key).and_then(Value::as_bool).unwrap_or(false))
                    .map(|(_, mode)| *mode)
                    .collect();
                if modes.is_empty() {
                    vec![PoolingMode::Mean]
                } else {
                    modes
                }
            }
        };
        if modes.is_empty() {
            return Err(ModelError::config(path, "pooling_mode is empty"));
        }
        Ok(PoolingConfig {
            modes,
            include_prompt: raw
                .get("include_prompt")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        })
    }
}
