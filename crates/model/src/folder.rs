//! A model folder in the Hugging Face / sentence-transformers layout, read into a description of
//! the module pipeline. Both ST config formats are accepted:
//! - old (≤ 5.3): short class paths in `modules.json`, `pooling_mode_*_tokens` booleans and
//!   `word_embedding_dimension`, `max_seq_length` in `sentence_bert_config.json`;
//! - new (≥ 5.4): full class paths, `"pooling_mode": "mean"` (or a list), `embedding_dimension`,
//!   the max length as `model_max_length` in `tokenizer_config.json`.
//!
//! A plain Hugging Face folder (no `modules.json`) gets mean pooling, as ST does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::ArchitectureConfig;
use crate::error::{ModelError, Result, read_json};
use crate::modules::{DenseActivation, DenseConfig, PoolingConfig, PoolingMode};

/// One step after the transformer, in `modules.json` order.
#[derive(Debug, Clone)]
pub enum HeadConfig {
    Dense(DenseConfig),
    Normalize,
}

#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub root: PathBuf,
    /// Folder of the transformer module (config.json, weights, tokenizer).
    pub transformer_dir: PathBuf,
    pub architecture: ArchitectureConfig,
    /// The effective max length, computed as ST does, then capped by the position table.
    pub max_seq_length: usize,
    pub do_lower_case: bool,
    pub pooling: PoolingConfig,
    pub heads: Vec<HeadConfig>,
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    pub similarity_fn_name: Option<String>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize, Default)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
    similarity_fn_name: Option<String>,
}

impl ModelFolder {
    pub fn load(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(ModelError::MissingFile {
                path: root.to_path_buf(),
            });
        }
        let modules_path = root.join("modules.json");
        let entries: Vec<ModuleEntry> = if modules_path.exists() {
            read_json(&modules_path)?
        } else {
            vec![ModuleEntry {
                path: String::new(),
                kind: "Transformer".into(),
            }]
        };
        let mut transformer_dir = None;
        let mut pooling = None;
        let mut heads = Vec::new();
        for entry in &entries {
            let dir = root.join(&entry.path);
            let class = entry.kind.rsplit('.').next().unwrap_or_default();
            match class {
                "Transformer" if transformer_dir.is_none() => transformer_dir = Some(dir),
                "Pooling" => pooling = Some(PoolingConfig::load(&dir.join("config.json"))?),
                "Dense" => heads.push(HeadConfig::Dense(DenseConfig::load(&dir)?)),
                "Normalize" => heads.push(HeadConfig::Normalize),
                _ => {
                    return Err(ModelError::config(
                        &modules_path,
                        format!(
                            "unsupported module type {:?} (supported: Transformer, Pooling, Dense, Normalize)",
                            entry.kind
                        ),
                    ));
                }
            }
        }
        let transformer_dir = transformer_dir.ok_or_else(|| {
            ModelError::config(&modules_path, "no Transformer module (it must come first)")
        })?;
        let architecture = ArchitectureConfig::load(&transformer_dir.join("config.json"))?;
        let pooling = pooling.unwrap_or(PoolingConfig {
            modes: vec![PoolingMode::Mean],
            include_prompt: true,
        });

        let sbert_path = transformer_dir.join("sentence_bert_config.json");
        let sbert: SentenceBertConfig = if sbert_path.exists() {
            read_json(&sbert_path)?
        } else {
            SentenceBertConfig::default()
        };
        let max_seq_length = resolve_max_seq_length(&transformer_dir, &architecture, &sbert)?;

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
            transformer_dir,
            architecture,
            max_seq_length,
            do_lower_case: sbert.do_lower_case,
            pooling,
            heads,
            prompts: st.prompts,
            default_prompt_name: st.default_prompt_name,
            similarity_fn_name: st.similarity_fn_name,
        })
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.transformer_dir.join("tokenizer.json")
    }

    pub fn weights_path(&self) -> PathBuf {
        self.transformer_dir.join("model.safetensors")
    }
}

/// ST's rule: `max_seq_length` from sentence_bert_config.json if set; otherwise the tokenizer's
/// `model_max_length` capped at `max_position_embeddings`. We additionally cap at the positions
/// the model can really encode (MPNet loses two to its padding offset), where ST would crash.
fn resolve_max_seq_length(
    dir: &Path,
    architecture: &ArchitectureConfig,
    sbert: &SentenceBertConfig,
) -> Result<usize> {
    let limit = architecture.max_input_tokens();
    let from_st = match sbert.max_seq_length {
        Some(n) => n,
        None => {
            let path = dir.join("tokenizer_config.json");
            let model_max_length = if path.exists() {
                let config: Value = read_json(&path)?;
                config.get("model_max_length").and_then(Value::as_f64)
            } else {
                None
            };
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
