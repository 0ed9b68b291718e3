//! `config.json` of a Hugging Face transformer, parsed into the architecture it describes.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ModelError, Result, read_json};
use crate::ops::{Heads, LayerAttention, Rope, RopeScaling, Scores, Window};

/// Activation of the feed-forward block, by its Hugging Face name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact erf form.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    fn parse(name: &str, path: &Path) -> Result<Self> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(ModelError::config(
                    path,
                    format!("unsupported activation {other:?}"),
                ));
            }
        })
    }
}

/// The shape of an encoder-only transformer, common to every architecture we run.
#[derive(Debug, Clone)]
pub struct EncoderShape {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    /// A masked-language-model head decodes with the word embeddings (`tie_word_embeddings`,
    /// Hugging Face's default) rather than a decoder weight of its own.
    pub tie_word_embeddings: bool,
}

#[derive(Debug, Clone)]
pub enum ArchitectureConfig {
    Bert {
        shape: EncoderShape,
        type_vocab_size: usize,
    },
    DistilBert {
        shape: EncoderShape,
    },
    MPNet {
        shape: EncoderShape,
        relative_attention_num_buckets: usize,
        pad_token_id: usize,
    },
    /// RoBERTa, XLM-RoBERTa and CamemBERT (one architecture in Hugging Face's code).
    Roberta {
        shape: EncoderShape,
        type_vocab_size: usize,
        pad_token_id: usize,
        /// The tokenizer class of the model_type (RoBERTa's, XLM-RoBERTa's or CamemBERT's).
        tokenizer_class: &'static str,
    },
    ModernBert(ModernBertConfig),
    Llama(LlamaConfig),
    Gemma(GemmaConfig),
    /// T5's and mT5's encoder (sentence-t5, GTR-T5), as ST loads it (`T5EncoderModel`).
    T5(T5Config),
}

/// What ModernBERT adds to the common shape (`layer_norm_eps` is its `norm_eps`, `activation`
/// its `hidden_activation`).
#[derive(Debug, Clone)]
pub struct ModernBertConfig {
    pub shape: EncoderShape,
    /// One per layer: a local layer (`sliding_attention`) sees the keys at most
    /// `local_attention / 2` positions away, a global one the whole text; each kind has its
    /// own rotary base.
    pub layers: Vec<LayerAttention>,
    /// Whether the LayerNorms, the attention projections and the feed-forward projections have
    /// biases (`norm_bias`, `attention_bias`, `mlp_bias`).
    pub norm_bias: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// The masked-language-model head's activation and dense layer's bias
    /// (`classifier_activation`, `classifier_bias`) and its decoder's bias (`decoder_bias`).
    pub head_activation: Activation,
    pub head_bias: bool,
    pub decoder_bias: bool,
}

/// The tokenizer transformers 5 registers for a model type, which with the class that
/// tokenizer_config.json names decides how AutoTokenizer builds the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisteredTokenizer {
    /// A class that builds its own pipeline. `overrides_hub`: the model type's hub configs are
    /// known to name wrong classes, so this one is taken whatever they name.
    Class {
        name: &'static str,
        overrides_hub: bool,
    },
    /// `TokenizersBackend`: tokenizer.json as it is, whatever class tokenizer_config.json names
    /// (ModernBERT's, Mistral's).
    File,
    /// None: the class tokenizer_config.json names (Llama's).
    Unregistered,
}

/// Which of a decoder layer's projections have biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Biases {
    /// `q_proj`, `k_proj`, `v_proj`.
    pub qkv: bool,
    /// `o_proj`.
    pub output: bool,
    /// `gate_proj`, `up_proj`, `down_proj`.
    pub mlp: bool,
}

/// Which member of the Llama family a [`LlamaConfig`] describes (config.json's model_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlamaFamily {
    Llama,
    /// Under e5-mistral-7b-instruct, SFR-Embedding-Mistral, Linq-Embed-Mistral.
    Mistral,
    Qwen2,
    /// Under Qwen3-Embedding.
    Qwen3,
}

/// The Llama family of decoders as embedding models run them (transformers' `LlamaModel`,
/// `MistralModel`, `Qwen2Model`, `Qwen3Model`): what they add to the common shape
/// (`layer_norm_eps` is their `rms_norm_eps`). One architecture: they differ only in their
/// biases, Qwen3's per-head query and key norms, and which layers attend within a window.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub family: LlamaFamily,
    pub shape: EncoderShape,
    /// Grouped-query heads of `head_dim` values (not `hidden_size / num_heads` in general).
    pub heads: Heads,
    pub biases: Biases,
    /// One per layer: the keys a query sees, [`Window::CAUSAL`] or the `sliding_window`
    /// tokens up to itself, and the one rotary base.
    pub layers: Vec<LayerAttention>,
}

impl LlamaConfig {
    /// Qwen3 normalizes each query and key head before rotary positions.
    pub fn head_norms(&self) -> bool {
        self.family == LlamaFamily::Qwen3
    }
}

/// T5's encoder: what it adds to the common shape (`hidden_size` is its `d_model`,
/// `intermediate_size` its `d_ff`, `layer_norm_eps` its `layer_norm_epsilon`, `activation` its
/// `feed_forward_proj`'s; positions are relative, so `max_position_embeddings` is unbounded).
#[derive(Debug, Clone)]
pub struct T5Config {
    pub shape: EncoderShape,
    /// `num_heads` heads of `d_kv` values (their width need not split `d_model`).
    pub heads: Heads,
    /// `gated-…` feed-forward blocks (T5 v1.1, mT5): `wo(act(wi_0·x) ⊙ wi_1·x)`; else
    /// `wo(act(wi·x))`.
    pub gated: bool,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
}

/// Which Gemma text decoder: they share a layer and differ in its attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmaGeneration {
    /// Gemma 2 (bge-multilingual-gemma2): causal, scores soft-capped.
    Gemma2,
    /// Gemma 3 (EmbeddingGemma): an RMSNorm over each query and key head, a rotary base per
    /// kind of layer, and optionally bidirectional.
    Gemma3,
}

/// A Gemma text decoder: what it adds to the common shape (`layer_norm_eps` is its
/// `rms_norm_eps`, `activation` its `hidden_activation`).
#[derive(Debug, Clone)]
pub struct GemmaConfig {
    pub generation: GemmaGeneration,
    pub shape: EncoderShape,
    /// Grouped-query heads of `head_dim` values.
    pub heads: Heads,
    /// One per layer: sliding-window layers (`sliding_attention`) and full ones. Scores are
    /// scaled by `query_pre_attn_scalar^-½`, not `head_dim^-½` (and capped in Gemma 2).
    pub layers: Vec<LayerAttention>,
    pub attention_bias: bool,
}

impl GemmaConfig {
    /// Whether each query and key head goes through an RMSNorm before its rotation.
    pub fn head_norms(&self) -> bool {
        self.generation == GemmaGeneration::Gemma3
    }
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    // BERT / MPNet names
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    position_embedding_type: Option<String>,
    relative_attention_num_buckets: Option<usize>,
    pad_token_id: Option<usize>,
    tie_word_embeddings: Option<bool>,
    // DistilBERT names
    dim: Option<usize>,
    n_layers: Option<usize>,
    n_heads: Option<usize>,
    hidden_dim: Option<usize>,
    activation: Option<String>,
    // ModernBERT names
    hidden_activation: Option<String>,
    norm_eps: Option<f64>,
    norm_bias: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    local_attention: Option<usize>,
    global_attn_every_n_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    global_rope_theta: Option<f64>,
    local_rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    /// Rotary keys transformers reads beside `rope_parameters`.
    original_max_position_embeddings: Option<f64>,
    partial_rotary_factor: Option<f64>,
    classifier_activation: Option<String>,
    classifier_bias: Option<bool>,
    decoder_bias: Option<bool>,
    // Llama-family names
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    /// `Some(None)`: present as `null` (Mistral: no window), which differs from absent (4096).
    #[serde(default, deserialize_with = "present")]
    sliding_window: Option<Option<usize>>,
    // Gemma names
    query_pre_attn_scalar: Option<f64>,
    sliding_window_pattern: Option<usize>,
    use_bidirectional_attention: Option<bool>,
    rope_local_base_freq: Option<f64>,
    /// `Some(None)`: present as `null` (no cap), which differs from absent (Gemma 2: 50).
    #[serde(default, deserialize_with = "present")]
    attn_logit_softcapping: Option<Option<f64>>,
    // T5 names
    d_model: Option<usize>,
    d_kv: Option<usize>,
    d_ff: Option<usize>,
    num_layers: Option<usize>,
    num_heads: Option<usize>,
    relative_attention_max_distance: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    feed_forward_proj: Option<String>,
    is_decoder: Option<bool>,
}

impl RawConfig {
    /// The shape from BERT's key names, which MPNet shares.
    fn bert_style_shape(&self, path: &Path, positions: usize, eps: f64) -> Result<EncoderShape> {
        Ok(EncoderShape {
            vocab_size: need(self.vocab_size, "vocab_size", path)?,
            hidden_size: need(self.hidden_size, "hidden_size", path)?,
            num_layers: need(self.num_hidden_layers, "num_hidden_layers", path)?,
            num_heads: need(self.num_attention_heads, "num_attention_heads", path)?,
            intermediate_size: need(self.intermediate_size, "intermediate_size", path)?,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(positions),
            layer_norm_eps: self.layer_norm_eps.unwrap_or(eps),
            activation: Activation::parse(self.hidden_act.as_deref().unwrap_or("gelu"), path)?,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(true),
        })
    }

    /// ModernBERT's config, in Hugging Face's older keys (`global_attn_every_n_layers`,
    /// `global_rope_theta`, `local_rope_theta`: the hub's checkpoints) or transformers 5's
    /// (`layer_types`, `rope_parameters`), with `ModernBertConfig`'s defaults.
    fn modern_bert(&self, path: &Path) -> Result<ModernBertConfig> {
        let num_layers = need(self.num_hidden_layers, "num_hidden_layers", path)?;
        let every = self.global_attn_every_n_layers.unwrap_or(3);
        if every == 0 && self.layer_types.is_none() {
            return Err(ModelError::config(
                path,
                "global_attn_every_n_layers must be at least 1",
            ));
        }
        let activation = self.hidden_activation.as_deref().unwrap_or("gelu");
        // BERT's key names, but for the norm's epsilon and the activation.
        let shape = EncoderShape {
            layer_norm_eps: self.norm_eps.unwrap_or(1e-5),
            activation: Activation::parse(activation, path)?,
            ..self.bert_style_shape(path, 8192, 1e-5)?
        };
        // transformers 5 keeps one entry per layer type in `rope_parameters`; ModernBertConfig
        // merges transformers 4's `rope_scaling` into both.
        let rope = |layer_type, theta| {
            self.layer_rope(layer_type, true, theta, shape.max_position_embeddings, path)
        };
        let local = LayerAttention {
            window: Some(Window::around(self.local_attention.unwrap_or(128) / 2)),
            rope: rope("sliding_attention", (self.local_rope_theta, 10_000.0))?,
            scores: Scores::default(),
        };
        let global = LayerAttention {
            window: None,
            rope: rope("full_attention", (self.global_rope_theta, 160_000.0))?,
            scores: Scores::default(),
        };
        let layers = self.layer_kinds(num_layers, |i| i % every.max(1) != 0, path)?;
        Ok(ModernBertConfig {
            shape,
            layers: layers.attending(local, global),
            norm_bias: self.norm_bias.unwrap_or(false),
            attention_bias: self.attention_bias.unwrap_or(false),
            mlp_bias: self.mlp_bias.unwrap_or(false),
            head_activation: Activation::parse(
                self.classifier_activation.as_deref().unwrap_or("gelu"),
                path,
            )?,
            head_bias: self.classifier_bias.unwrap_or(false),
            decoder_bias: self.decoder_bias.unwrap_or(true),
        })
    }

    /// A Llama-family config with the defaults of its transformers class, the rotary embedding
    /// in transformers 4's keys (`rope_theta`, `rope_scaling`) or 5's (`rope_parameters`). The
    /// sliding window:
    /// Mistral's applies to every layer (absent: 4096; `null`: none), Qwen's to the layers
    /// `layer_types` names, else to those from `max_window_layers` on where
    /// `use_sliding_window`; Llama has none.
    fn llama(&self, family: LlamaFamily, path: &Path) -> Result<LlamaConfig> {
        let positions = match family {
            LlamaFamily::Llama => 2048,
            LlamaFamily::Mistral => 131_072,
            LlamaFamily::Qwen2 | LlamaFamily::Qwen3 => 32_768,
        };
        let shape = EncoderShape {
            layer_norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            activation: Activation::parse(self.hidden_act.as_deref().unwrap_or("silu"), path)?,
            ..self.bert_style_shape(path, positions, 1e-6)?
        };
        let heads = self.grouped_heads(&shape, path)?;
        let rope = self.single_rope(shape.max_position_embeddings, path)?;
        let attention_bias = self.attention_bias.unwrap_or(false);
        let (qkv, output, mlp) = match family {
            LlamaFamily::Llama => (
                attention_bias,
                attention_bias,
                self.mlp_bias.unwrap_or(false),
            ),
            LlamaFamily::Mistral => (false, false, false),
            LlamaFamily::Qwen2 => (true, false, false),
            LlamaFamily::Qwen3 => (attention_bias, attention_bias, false),
        };
        let layers = shape.num_layers;
        let (window, kinds) = match family {
            LlamaFamily::Llama => (None, LayerKinds(vec![false; layers])),
            LlamaFamily::Mistral => {
                let window = self.sliding_window.unwrap_or(Some(4096));
                (window, LayerKinds(vec![true; layers]))
            }
            LlamaFamily::Qwen2 | LlamaFamily::Qwen3 => {
                let window = match self.use_sliding_window {
                    Some(true) => self.sliding_window.unwrap_or(Some(4096)),
                    _ => None,
                };
                let first = self.max_window_layers.unwrap_or(28);
                let kinds = self.layer_kinds(layers, |i| window.is_some() && i >= first, path)?;
                (window, kinds)
            }
        };
        let sliding_window = match window {
            Some(0) => {
                return Err(ModelError::config(
                    path,
                    "sliding_window must be at least 1",
                ));
            }
            Some(w) => Window::sliding(w),
            None => Window::CAUSAL,
        };
        let attending = |window| LayerAttention {
            window: Some(window),
            rope,
            scores: Scores::default(),
        };
        Ok(LlamaConfig {
            family,
            shape,
            heads,
            biases: Biases { qkv, output, mlp },
            layers: kinds.attending(attending(sliding_window), attending(Window::CAUSAL)),
        })
    }

    /// A Gemma config with its class's defaults (`Gemma2Config`, `Gemma3TextConfig`). Gemma 3's
    /// in transformers 4's keys (`rope_theta`, `rope_local_base_freq`, `sliding_window_pattern`:
    /// EmbeddingGemma's checkpoint) or 5's (`rope_parameters` per layer type, `layer_types`).
    fn gemma(&self, generation: GemmaGeneration, path: &Path) -> Result<GemmaConfig> {
        let gemma3 = generation == GemmaGeneration::Gemma3;
        let positions = if gemma3 { 131_072 } else { 8192 };
        let shape = EncoderShape {
            max_position_embeddings: self.max_position_embeddings.unwrap_or(positions),
            layer_norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            activation: Activation::parse(
                self.hidden_activation
                    .as_deref()
                    .unwrap_or("gelu_pytorch_tanh"),
                path,
            )?,
            ..self.bert_style_shape(path, positions, 1e-6)?
        };
        let heads = self.grouped_heads(&shape, path)?;
        let softcap = match (generation, self.attn_logit_softcapping) {
            (GemmaGeneration::Gemma2, None) => Some(50.0),
            (GemmaGeneration::Gemma2, Some(cap)) => cap,
            // Gemma 3 passes a cap only to attention kernels that take one (not to sdpa, which
            // transformers picks): its output would depend on the kernel.
            (GemmaGeneration::Gemma3, Some(Some(_))) => {
                return Err(ModelError::config(
                    path,
                    "attn_logit_softcapping is not supported for Gemma 3",
                ));
            }
            (GemmaGeneration::Gemma3, _) => None,
        };
        if let Some(cap) = softcap
            && (!cap.is_finite() || cap <= 0.0)
        {
            return Err(ModelError::config(
                path,
                format!("attn_logit_softcapping must be positive, not {cap}"),
            ));
        }
        let scores = Scores {
            scale: Some(self.query_pre_attn_scalar.unwrap_or(256.0).powf(-0.5)),
            softcap,
        };
        // Gemma 2 builds causal masks whatever `use_bidirectional_attention` says (transformers
        // 5.23 reads it for the kernels' `is_causal` only): what it asks for is unclear.
        let bidirectional = self.use_bidirectional_attention == Some(true);
        if bidirectional && !gemma3 {
            return Err(ModelError::config(
                path,
                "use_bidirectional_attention is not supported for Gemma 2 (transformers keeps \
                 its masks causal)",
            ));
        }
        let kinds = match generation {
            GemmaGeneration::Gemma2 => self.layer_kinds(shape.num_layers, |i| i % 2 == 0, path)?,
            GemmaGeneration::Gemma3 => {
                let pattern = self.sliding_window_pattern.unwrap_or(6);
                if pattern == 0 && self.layer_types.is_none() {
                    return Err(ModelError::config(
                        path,
                        "sliding_window_pattern must be at least 1",
                    ));
                }
                self.layer_kinds(shape.num_layers, |i| (i + 1) % pattern.max(1) != 0, path)?
            }
        };
        // transformers cannot run a Gemma without a window (its masks divide by it).
        let window = match self.sliding_window {
            None => 4096,
            Some(Some(window)) => window,
            Some(None) => {
                return Err(ModelError::config(
                    path,
                    "sliding_window null is not supported for Gemma (transformers needs a \
                     window)",
                ));
            }
        };
        if window == 0 {
            return Err(ModelError::config(
                path,
                "sliding_window must be at least 1",
            ));
        }
        // transformers turns a bidirectional model's `sliding_window` W into keys less than
        // W / 2 + 1 positions away each way; a causal one's sees the W - 1 tokens before it.
        let (sliding_window, full_window) = if bidirectional {
            (Window::around(window / 2), None)
        } else {
            (Window::sliding(window), Some(Window::CAUSAL))
        };
        let (sliding_rope, full_rope) = match generation {
            GemmaGeneration::Gemma2 => {
                let rope = self.single_rope(shape.max_position_embeddings, path)?;
                (rope, rope)
            }
            // Gemma3TextConfig merges transformers 4's `rope_scaling` into the full layers'
            // entry only (Gemma 3 4B's linear scaling).
            GemmaGeneration::Gemma3 => {
                let rope = |layer_type, scaled, theta| {
                    self.layer_rope(
                        layer_type,
                        scaled,
                        theta,
                        shape.max_position_embeddings,
                        path,
                    )
                };
                (
                    rope(
                        "sliding_attention",
                        false,
                        (self.rope_local_base_freq, 10_000.0),
                    )?,
                    rope("full_attention", true, (self.rope_theta, 1_000_000.0))?,
                )
            }
        };
        let sliding = LayerAttention {
            window: Some(sliding_window),
            rope: sliding_rope,
            scores,
        };
        let full = LayerAttention {
            window: full_window,
            rope: full_rope,
            scores,
        };
        Ok(GemmaConfig {
            generation,
            heads,
            layers: kinds.attending(sliding, full),
            attention_bias: self.attention_bias.unwrap_or(false),
            shape,
        })
    }

    /// T5's encoder (`T5Config`'s defaults; `mt5`: `MT5Config`'s), as `T5EncoderModel` runs it.
    fn t5(&self, mt5: bool, path: &Path) -> Result<T5Config> {
        if self.is_decoder == Some(true) {
            return Err(ModelError::config(
                path,
                "is_decoder: a T5 decoder is not an embedding model (ST runs T5's encoder)",
            ));
        }
        // transformers' rule: `gated-<act>` or `<act>`, `gated-gelu` meaning the tanh GELU.
        let projection = self.feed_forward_proj.as_deref();
        let projection = projection.unwrap_or(if mt5 { "gated-gelu" } else { "relu" });
        let (gated, activation) = match projection.split_once('-') {
            Some(("gated", "gelu")) => (true, "gelu_new"),
            Some(("gated", activation)) => (true, activation),
            None => (false, projection),
            Some(_) => {
                return Err(ModelError::config(
                    path,
                    format!(
                        "feed_forward_proj {projection:?} is not \"gated-<activation>\" or \
                         \"<activation>\""
                    ),
                ));
            }
        };
        let hidden_size = self.d_model.unwrap_or(512);
        let num_heads = self.num_heads.unwrap_or(8);
        let shape = EncoderShape {
            vocab_size: self
                .vocab_size
                .unwrap_or(if mt5 { 250_112 } else { 32_128 }),
            hidden_size,
            num_layers: self.num_layers.unwrap_or(6),
            num_heads,
            intermediate_size: self.d_ff.unwrap_or(if mt5 { 1024 } else { 2048 }),
            max_position_embeddings: usize::MAX,
            layer_norm_eps: self.layer_norm_epsilon.unwrap_or(1e-6),
            activation: Activation::parse(activation, path)?,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(!mt5),
        };
        let dim = self.d_kv.unwrap_or(64);
        if dim == 0 {
            return Err(ModelError::config(path, "d_kv must be at least 1"));
        }
        let num_buckets = self.relative_attention_num_buckets.unwrap_or(32);
        let max_distance = self.relative_attention_max_distance.unwrap_or(128);
        // The bucketing halves the buckets twice and divides by the log of max_distance over
        // the quarter.
        if num_buckets < 4 || max_distance <= num_buckets / 4 {
            return Err(ModelError::config(
                path,
                format!(
                    "relative_attention_num_buckets {num_buckets} with \
                     relative_attention_max_distance {max_distance}: needs at least 4 buckets \
                     and a distance past a quarter of them"
                ),
            ));
        }
        Ok(T5Config {
            shape,
            heads: Heads {
                query: num_heads,
                key_value: num_heads,
                dim,
            },
            gated,
            relative_attention_num_buckets: num_buckets,
            relative_attention_max_distance: max_distance,
        })
    }

    /// Which layers are sliding-window (local) ones: from `layer_types` (transformers 5's
    /// key) if given, else each layer's `default`.
    fn layer_kinds(
        &self,
        num_layers: usize,
        default: impl Fn(usize) -> bool,
        path: &Path,
    ) -> Result<LayerKinds> {
        let Some(types) = &self.layer_types else {
            return Ok(LayerKinds((0..num_layers).map(default).collect()));
        };
        if types.len() != num_layers {
            return Err(ModelError::config(
                path,
                format!(
                    "layer_types has {} entries for {num_layers} layers",
                    types.len()
                ),
            ));
        }
        let kinds = types
            .iter()
            .map(|kind| match kind.as_str() {
                "sliding_attention" => Ok(true),
                "full_attention" => Ok(false),
                other => Err(ModelError::config(
                    path,
                    format!("unsupported layer type {other:?} in layer_types"),
                )),
            })
            .collect::<Result<_>>()?;
        Ok(LayerKinds(kinds))
    }

    /// A decoder's grouped-query heads: `num_key_value_heads` (default: one per query head)
    /// each shared by a group of query heads, `head_dim` wide (default: hidden / heads).
    fn grouped_heads(&self, shape: &EncoderShape, path: &Path) -> Result<Heads> {
        let query = shape.num_heads;
        let key_value = self.num_key_value_heads.unwrap_or(query);
        if key_value == 0 || !query.is_multiple_of(key_value) {
            return Err(ModelError::config(
                path,
                format!(
                    "{query} attention heads do not split into groups of \
                     num_key_value_heads {key_value}"
                ),
            ));
        }
        let dim = self.head_dim.unwrap_or(shape.hidden_size / query.max(1));
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(ModelError::config(
                path,
                format!("head_dim {dim} must be even (rotary positions rotate pairs)"),
            ));
        }
        Ok(Heads {
            query,
            key_value,
            dim,
        })
    }

    /// The rotary embedding of a model with one for every layer (the Llama family, Gemma 2):
    /// transformers 4's `rope_scaling` if set, else 5's `rope_parameters`; a top-level
    /// `original_max_position_embeddings` wins over both. `positions`: as [`Self::rope_of`].
    fn single_rope(&self, positions: usize, path: &Path) -> Result<Rope> {
        let mut parameters = match &self.rope_scaling {
            Some(Value::Object(scaling)) if !scaling.is_empty() => scaling.clone(),
            _ => rope_parameters_entry(self.rope_parameters.as_ref()),
        };
        if let Some(positions) = self.original_max_position_embeddings {
            parameters.insert("original_max_position_embeddings".into(), positions.into());
        }
        self.rope_of(parameters, (self.rope_theta, 10_000.0), positions, path)
    }

    /// The rotary embedding of `layer_type`'s layers, from its entry in transformers 5's
    /// per-layer-type `rope_parameters`, with transformers 4's `rope_scaling` merged in where
    /// the config class merges it (`scaled`); the rest as [`Self::rope_of`] says.
    fn layer_rope(
        &self,
        layer_type: &str,
        scaled: bool,
        theta: (Option<f64>, f64),
        positions: usize,
        path: &Path,
    ) -> Result<Rope> {
        let entry = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get(layer_type));
        let mut entry = rope_parameters_entry(entry);
        if let (true, Some(Value::Object(scaling))) = (scaled, &self.rope_scaling) {
            entry.extend(scaling.clone());
        }
        self.rope_of(entry, theta, positions, path)
    }

    /// A rotary embedding from its `rope_parameters` entry as transformers standardizes it:
    /// the base from the entry, else transformers 4's key (`old`), else the family's default;
    /// the type from `rope_type` (or the older `type`); `positions`, the model's
    /// `max_position_embeddings`, for what `llama3` scaling leaves out. The types that only
    /// rescale the frequencies are run (`default`, `linear`, `llama3`); the others, and a
    /// partial rotary factor, are refused, with the file named.
    fn rope_of(
        &self,
        entry: Map<String, Value>,
        (old, default): (Option<f64>, f64),
        positions: usize,
        path: &Path,
    ) -> Result<Rope> {
        let partial = entry.get("partial_rotary_factor").and_then(Value::as_f64);
        if let Some(factor) = partial.or(self.partial_rotary_factor)
            && factor != 1.0
        {
            return Err(ModelError::config(
                path,
                format!("partial_rotary_factor {factor} is not supported (only 1)"),
            ));
        }
        let kind = entry.get("rope_type").or_else(|| entry.get("type"));
        let kind = kind.and_then(Value::as_str).unwrap_or("default");
        let number = |key: &str| {
            entry.get(key).and_then(Value::as_f64).ok_or_else(|| {
                ModelError::config(
                    path,
                    format!("rope_type {kind:?} needs a number {key:?} in its rope parameters"),
                )
            })
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: number("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                // transformers' fallback: the model's own context length.
                original_max_position_embeddings: number("original_max_position_embeddings")
                    .unwrap_or(positions as f64),
            },
            other => {
                return Err(ModelError::config(
                    path,
                    format!(
                        "rope_type {other:?} is not supported (only \"default\", \"linear\" \
                         and \"llama3\")"
                    ),
                ));
            }
        };
        let theta = entry.get("rope_theta").and_then(Value::as_f64);
        Ok(Rope {
            theta: theta.or(old).unwrap_or(default),
            scaling,
        })
    }
}

/// One entry per layer, true for a sliding-window (local) layer.
struct LayerKinds(Vec<bool>);

impl LayerKinds {
    /// Each layer's attention: `sliding` for a sliding-window layer, else `full`.
    fn attending(self, sliding: LayerAttention, full: LayerAttention) -> Vec<LayerAttention> {
        let kind = |is_sliding| if is_sliding { sliding } else { full };
        self.0.into_iter().map(kind).collect()
    }
}

/// A `rope_parameters` entry's keys (none where it is absent or not an object).
fn rope_parameters_entry(entry: Option<&Value>) -> Map<String, Value> {
    match entry {
        Some(Value::Object(entry)) => entry.clone(),
        _ => Map::new(),
    }
}

/// A field that is present, `null` or not: `Some(None)` for `null`, and (with
/// `#[serde(default)]`) `None` for absent.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::deserialize(deserializer).map(Some)
}

fn need(value: Option<usize>, key: &str, path: &Path) -> Result<usize> {
    value.ok_or_else(|| ModelError::config(path, format!("missing key {key:?}")))
}

impl ArchitectureConfig {
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_json(path, &read_json(path)?)
    }

    /// The architecture `config` (config.json's contents, read from `path`) describes.
    pub fn from_json(path: &Path, config: &Value) -> Result<Self> {
        let raw = RawConfig::deserialize(config).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let kind = raw
            .model_type
            .clone()
            .or_else(|| raw.architectures.first().map(|a| a.to_lowercase()))
            .unwrap_or_default();
        let named = |model_type: &str| {
            let class = model_type.replace('-', "");
            kind == model_type
                || kind == format!("{class}model")
                || kind.starts_with(&format!("{class}for"))
        };
        let bert_like = named("bert")
            || ["roberta", "xlm-roberta", "camembert"]
                .into_iter()
                .any(named);
        if bert_like
            && let Some(scheme) = raw.position_embedding_type.as_deref()
            && scheme != "absolute"
        {
            return Err(ModelError::config(
                path,
                format!("position_embedding_type {scheme:?} is not supported (only \"absolute\")"),
            ));
        }
        let config = match kind.as_str() {
            _ if named("bert") => ArchitectureConfig::Bert {
                shape: raw.bert_style_shape(path, 512, 1e-12)?,
                type_vocab_size: raw.type_vocab_size.unwrap_or(2),
            },
            _ if bert_like => ArchitectureConfig::Roberta {
                shape: raw.bert_style_shape(path, 514, 1e-5)?,
                type_vocab_size: raw.type_vocab_size.unwrap_or(1),
                pad_token_id: raw.pad_token_id.unwrap_or(1),
                tokenizer_class: if named("xlm-roberta") {
                    "XLMRobertaTokenizer"
                } else if named("camembert") {
                    "CamembertTokenizer"
                } else {
                    "RobertaTokenizer"
                },
            },
            k if k == "distilbert" || k.starts_with("distilbert") => {
                ArchitectureConfig::DistilBert {
                    shape: EncoderShape {
                        vocab_size: need(raw.vocab_size, "vocab_size", path)?,
                        hidden_size: need(raw.dim, "dim", path)?,
                        num_layers: need(raw.n_layers, "n_layers", path)?,
                        num_heads: need(raw.n_heads, "n_heads", path)?,
                        intermediate_size: need(raw.hidden_dim, "hidden_dim", path)?,
                        max_position_embeddings: raw.max_position_embeddings.unwrap_or(512),
                        // DistilBERT's LayerNorms are built with a fixed eps of 1e-12.
                        layer_norm_eps: 1e-12,
                        activation: Activation::parse(
                            raw.activation.as_deref().unwrap_or("gelu"),
                            path,
                        )?,
                        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
                    },
                }
            }
            _ if named("modernbert") => ArchitectureConfig::ModernBert(raw.modern_bert(path)?),
            _ if named("llama") => ArchitectureConfig::Llama(raw.llama(LlamaFamily::Llama, path)?),
            _ if named("mistral") => {
                ArchitectureConfig::Llama(raw.llama(LlamaFamily::Mistral, path)?)
            }
            _ if named("qwen2") => ArchitectureConfig::Llama(raw.llama(LlamaFamily::Qwen2, path)?),
            _ if named("qwen3") => ArchitectureConfig::Llama(raw.llama(LlamaFamily::Qwen3, path)?),
            _ if named("t5") || named("t5encoder") => ArchitectureConfig::T5(raw.t5(false, path)?),
            _ if named("mt5") || named("mt5encoder") => ArchitectureConfig::T5(raw.t5(true, path)?),
            _ if named("gemma2") => {
                ArchitectureConfig::Gemma(raw.gemma(GemmaGeneration::Gemma2, path)?)
            }
            // `Gemma3TextModel` / `Gemma3ForCausalLM`; the multimodal `gemma3` nests its text
            // model's config, which is not this.
            k if k == "gemma3_text" || k.starts_with("gemma3text") || k == "gemma3forcausallm" => {
                ArchitectureConfig::Gemma(raw.gemma(GemmaGeneration::Gemma3, path)?)
            }
            k if k == "mpnet" || k.starts_with("mpnet") => ArchitectureConfig::MPNet {
                shape: raw.bert_style_shape(path, 514, 1e-5)?,
                relative_attention_num_buckets: raw.relative_attention_num_buckets.unwrap_or(32),
                pad_token_id: raw.pad_token_id.unwrap_or(1),
            },
            other => {
                return Err(ModelError::UnknownArchitecture {
                    path: path.to_path_buf(),
                    name: other.to_string(),
                });
            }
        };
        let shape = config.shape();
        // Heads split the hidden size, but where the config names their width (a decoder's
        // head_dim, checked with the rest of its config).
        let named_head_width = matches!(
            config,
            ArchitectureConfig::Llama(_) | ArchitectureConfig::Gemma(_) | ArchitectureConfig::T5(_)
        );
        if shape.num_heads == 0 || (!named_head_width && shape.hidden_size % shape.num_heads != 0) {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden size {} is not divisible by {} attention heads",
                    shape.hidden_size, shape.num_heads
                ),
            ));
        }
        Ok(config)
    }

    pub fn shape(&self) -> &EncoderShape {
        match self {
            ArchitectureConfig::Bert { shape, .. }
            | ArchitectureConfig::DistilBert { shape }
            | ArchitectureConfig::MPNet { shape, .. }
            | ArchitectureConfig::Roberta { shape, .. }
            | ArchitectureConfig::ModernBert(ModernBertConfig { shape, .. })
            | ArchitectureConfig::Llama(LlamaConfig { shape, .. })
            | ArchitectureConfig::Gemma(GemmaConfig { shape, .. })
            | ArchitectureConfig::T5(T5Config { shape, .. }) => shape,
        }
    }

    /// The attention heads' layout: a decoder's as its config names it, the others' `num_heads`
    /// heads splitting the hidden size.
    pub fn heads(&self) -> Heads {
        match self {
            ArchitectureConfig::Llama(LlamaConfig { heads, .. })
            | ArchitectureConfig::Gemma(GemmaConfig { heads, .. })
            | ArchitectureConfig::T5(T5Config { heads, .. }) => *heads,
            other => Heads::multi(other.shape().num_heads, other.shape().hidden_size),
        }
    }

    /// How each layer of a rotary model attends; `None` for the models with absolute
    /// positions, whose layers all see the whole text.
    pub fn layer_attention(&self) -> Option<&[LayerAttention]> {
        match self {
            ArchitectureConfig::ModernBert(ModernBertConfig { layers, .. })
            | ArchitectureConfig::Llama(LlamaConfig { layers, .. })
            | ArchitectureConfig::Gemma(GemmaConfig { layers, .. }) => Some(layers),
            _ => None,
        }
    }

    /// The prefix this architecture's weights carry in `*ForMaskedLM` / pretraining checkpoints.
    pub fn weight_prefix(&self) -> &'static str {
        match self {
            ArchitectureConfig::Bert { .. } => "bert",
            ArchitectureConfig::DistilBert { .. } => "distilbert",
            ArchitectureConfig::MPNet { .. } => "mpnet",
            // XLM-RoBERTa's and CamemBERT's masked-LM checkpoints use `roberta.` too.
            ArchitectureConfig::Roberta { .. } => "roberta",
            // And the decoders' `*ForCausalLM` checkpoints.
            ArchitectureConfig::ModernBert(_)
            | ArchitectureConfig::Llama(_)
            | ArchitectureConfig::Gemma(_) => "model",
            // T5's names (`shared.…`, `encoder.…`) are the same in every checkpoint class.
            ArchitectureConfig::T5(_) => "",
        }
    }

    /// What transformers 5 registers as the tokenizer of config.json's model_type
    /// (`TOKENIZER_MAPPING_NAMES`, and `MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS`).
    pub fn registered_tokenizer(&self) -> RegisteredTokenizer {
        let class = |name| RegisteredTokenizer::Class {
            name,
            overrides_hub: false,
        };
        match self {
            ArchitectureConfig::Bert { .. } | ArchitectureConfig::DistilBert { .. } => {
                class("BertTokenizer")
            }
            ArchitectureConfig::MPNet { .. } => class("MPNetTokenizer"),
            ArchitectureConfig::Roberta {
                tokenizer_class, ..
            } => class(tokenizer_class),
            ArchitectureConfig::ModernBert(_) => RegisteredTokenizer::File,
            ArchitectureConfig::Llama(config) => match config.family {
                LlamaFamily::Llama => RegisteredTokenizer::Unregistered,
                LlamaFamily::Mistral => RegisteredTokenizer::File,
                LlamaFamily::Qwen2 => RegisteredTokenizer::Class {
                    name: "Qwen2Tokenizer",
                    overrides_hub: true,
                },
                LlamaFamily::Qwen3 => class("Qwen2Tokenizer"),
            },
            ArchitectureConfig::Gemma(_) => class("GemmaTokenizer"),
            ArchitectureConfig::T5(_) => class("T5Tokenizer"),
        }
    }

    /// Whether the feed-forward blocks are gated (`down(act(gate·x) ⊙ up·x)`: three matrices,
    /// not two): ModernBERT's, the decoders', T5 v1.1's and mT5's.
    pub fn gated_feed_forward(&self) -> bool {
        match self {
            ArchitectureConfig::ModernBert(_)
            | ArchitectureConfig::Llama(_)
            | ArchitectureConfig::Gemma(_) => true,
            ArchitectureConfig::T5(config) => config.gated,
            _ => false,
        }
    }

    /// Floats a token holds at the peak of a layer, in its feed-forward block: the block's
    /// input, its intermediate activations and its output. A gated block holds the input and
    /// gate halves (2 × intermediate) and their product.
    pub fn peak_floats_per_token(&self) -> usize {
        let shape = self.shape();
        let intermediate = if self.gated_feed_forward() { 3 } else { 1 } * shape.intermediate_size;
        2 * shape.hidden_size + intermediate
    }

    /// Why this architecture cannot compute in float16, if it cannot: Gemma 3's activations
    /// overflow it (EmbeddingGemma's model card: use float32 or bfloat16). Gemma 2 is let
    /// through: bge-multilingual-gemma2's card runs it in float16.
    pub fn float16_refusal(&self) -> Option<&'static str> {
        match self {
            ArchitectureConfig::Gemma(GemmaConfig {
                generation: GemmaGeneration::Gemma3,
                ..
            }) => Some(
                "Gemma 3 models do not support float16 activations (EmbeddingGemma's model \
                 card: use float32 or bfloat16); choose precision bf16 or f32",
            ),
            ArchitectureConfig::T5(_) => Some(
                "T5 models do not support float16 activations (they overflow it: transformers \
                 keeps their last feed-forward projection in float32); choose precision bf16 or \
                 f32",
            ),
            _ => None,
        }
    }

    /// The longest input (in tokens, specials included) the positions can encode: the
    /// position table's rows, or `max_position_embeddings` for rotary positions (ModernBERT
    /// and the decoders); unbounded for T5's relative ones.
    pub fn max_input_tokens(&self) -> usize {
        match self {
            // MPNet and RoBERTa number positions from pad_token_id + 1.
            ArchitectureConfig::MPNet {
                shape,
                pad_token_id,
                ..
            }
            | ArchitectureConfig::Roberta {
                shape,
                pad_token_id,
                ..
            } => shape
                .max_position_embeddings
                .saturating_sub(pad_token_id + 1),
            other => other.shape().max_position_embeddings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config of a tiny decoder of `model_type`, with `extra` keys.
    fn load(model_type: &str, extra: Value) -> Result<ArchitectureConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut config = serde_json::json!({
            "model_type": model_type, "vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 16,
        });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        std::fs::write(&path, config.to_string()).unwrap();
        ArchitectureConfig::load(&path)
    }

    fn windows(model_type: &str, extra: Value) -> Vec<Window> {
        match load(model_type, extra).unwrap() {
            ArchitectureConfig::Llama(config) => config
                .layers
                .iter()
                .map(|layer| layer.window.unwrap())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    const SLIDING_8: Window = Window {
        before: 7,
        after: 0,
    };

    /// Which layers see a sliding window, as each family's transformers config decides it.
    #[test]
    fn llama_family_windows() {
        use serde_json::json;
        let causal = vec![Window::CAUSAL; 4];
        assert_eq!(windows("llama", json!({"sliding_window": 8})), causal);
        // Mistral: every layer, 4,096 when absent, none when null.
        assert_eq!(
            windows("mistral", json!({"sliding_window": 8})),
            [SLIDING_8; 4]
        );
        let default = Window {
            before: 4095,
            after: 0,
        };
        assert_eq!(windows("mistral", json!({})), [default; 4]);
        assert_eq!(windows("mistral", json!({"sliding_window": null})), causal);
        // Qwen: only with use_sliding_window, from max_window_layers on, or as layer_types say.
        for qwen in ["qwen2", "qwen3"] {
            assert_eq!(windows(qwen, json!({"sliding_window": 8})), causal);
            let from_2 =
                json!({"use_sliding_window": true, "sliding_window": 8, "max_window_layers": 2});
            assert_eq!(
                windows(qwen, from_2),
                [Window::CAUSAL, Window::CAUSAL, SLIDING_8, SLIDING_8]
            );
            let types = json!({"use_sliding_window": true, "sliding_window": 8, "layer_types":
                ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]});
            assert_eq!(
                windows(qwen, types),
                [SLIDING_8, Window::CAUSAL, Window::CAUSAL, SLIDING_8]
            );
        }
    }

    /// Each family's biases: Llama's as its config says, none in Mistral, q/k/v in Qwen2.
    #[test]
    fn llama_family_biases() {
        use serde_json::json;
        let biases = |model_type: &str, extra: Value| match load(model_type, extra).unwrap() {
            ArchitectureConfig::Llama(c) => (c.biases.qkv, c.biases.output, c.biases.mlp),
            other => panic!("{other:?}"),
        };
        let all = json!({"attention_bias": true, "mlp_bias": true});
        assert_eq!(biases("llama", all.clone()), (true, true, true));
        assert_eq!(biases("llama", json!({})), (false, false, false));
        assert_eq!(biases("mistral", all.clone()), (false, false, false));
        assert_eq!(biases("qwen2", json!({})), (true, false, false));
        assert_eq!(biases("qwen3", all), (true, true, false));
    }
}
