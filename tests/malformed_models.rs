//! A broken model folder gives an error that names the file at fault, never a panic.

use std::path::{Path, PathBuf};

use pool_encode_encoder::{Device, Precision, SentenceEncoder};
use pool_encode_tests::{
    assert_close, copy_dir, reference, reference_ids_in, texts, tiny_model_dir,
};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// A private copy of a tiny model (with a Dense head) to break.
fn copy_model() -> (tempfile::TempDir, PathBuf) {
    copy_tiny_model("bert-cls-dense-new")
}

/// A private copy of the tiny model `name` to break.
fn copy_tiny_model(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("model");
    copy_dir(&tiny_model_dir(name), &dst);
    (tmp, dst)
}

/// Rewrites config.json's top-level keys through `edit`.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&config).unwrap();
    edit(&mut config);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
}

/// The folder's rows for `texts` with ST's default encode options.
fn encode_folder(dir: &Path, texts: &[&str]) -> pool_encode_encoder::Embeddings {
    SentenceEncoder::load(dir, Device::default())
        .unwrap()
        .encode(texts, &pool_encode_encoder::EncodeOptions::default())
        .unwrap()
}

/// Leaves config.json naming its architecture by the class `class` only, as some hub configs do.
fn known_only_by_class(dir: &Path, class: &str) {
    edit_config(dir, |config| {
        config.remove("model_type");
        config.insert("architectures".into(), serde_json::json!([class]));
    });
}

/// Loads `dir`, expecting an error whose message names `file` and contains `words`.
fn expect_error(dir: &Path, file: &str, words: &str) {
    let err = match SentenceEncoder::load(dir, Device::default()) {
        Ok(_) => panic!("loading a model with a broken {file} succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(file), "error does not name {file}: {err}");
    assert!(err.contains(words), "error does not say {words:?}: {err}");
}

/// Rewrites model.safetensors through `edit`, which gets (name, dtype, shape, bytes) tuples.
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn missing_folder() {
    expect_error(
        Path::new("/nonexistent/model-folder"),
        "/nonexistent/model-folder",
        "missing",
    );
}

#[test]
fn missing_config_json() {
    let (_tmp, dir) = copy_model();
    std::fs::remove_file(dir.join("config.json")).unwrap();
    expect_error(&dir, "config.json", "missing required file");
}

#[test]
fn missing_weights() {
    let (_tmp, dir) = copy_model();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    expect_error(&dir, "model.safetensors", "missing required file");
}

#[test]
fn missing_tokenizer() {
    let (_tmp, dir) = copy_model();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    expect_error(&dir, "tokenizer.json", "missing required file");
}

#[test]
fn missing_dense_weights() {
    let (_tmp, dir) = copy_model();
    std::fs::remove_file(dir.join("2_Dense/model.safetensors")).unwrap();
    expect_error(&dir, "2_Dense/model.safetensors", "missing required file");
}

#[test]
fn truncated_safetensors() {
    let (_tmp, dir) = copy_model();
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&dir, "model.safetensors", "invalid safetensors file");
}

#[test]
fn safetensors_header_longer_than_the_file() {
    let (_tmp, dir) = copy_model();
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    expect_error(&dir, "model.safetensors", "invalid safetensors file");
}

#[test]
fn safetensors_header_lying_about_offsets() {
    let (_tmp, dir) = copy_model();
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // Point one tensor's data far past the end of the file.
    let (_, entry) = header
        .iter_mut()
        .find(|(k, _)| k.as_str() != "__metadata__")
        .unwrap();
    entry["data_offsets"] = serde_json::json!([9_999_999_990u64, 9_999_999_999u64]);
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    expect_error(&dir, "model.safetensors", "invalid safetensors file");
}

#[test]
fn safetensors_header_not_json() {
    let (_tmp, dir) = copy_model();
    let mut bytes = 16u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"this is not json");
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    expect_error(&dir, "model.safetensors", "invalid safetensors file");
}

#[test]
fn wrong_tensor_shape() {
    let (_tmp, dir) = copy_model();
    rewrite_weights(&dir, |tensors| {
        let t = tensors
            .iter_mut()
            .find(|t| t.0.ends_with("layer.1.intermediate.dense.weight"))
            .unwrap();
        // [64, 32] -> [32, 64]: same bytes, wrong shape.
        t.2 = vec![t.2[1], t.2[0]];
    });
    expect_error(
        &dir,
        "model.safetensors",
        "layer.1.intermediate.dense.weight\" has shape [32, 64], expected [64, 32]",
    );
}

#[test]
fn missing_tensor() {
    let (_tmp, dir) = copy_model();
    rewrite_weights(&dir, |tensors| {
        tensors.retain(|t| !t.0.contains("layer.0.attention.self.key.weight"))
    });
    expect_error(
        &dir,
        "model.safetensors",
        "encoder.layer.0.attention.self.key.weight\" not found",
    );
}

#[test]
fn unsupported_tensor_dtype() {
    let (_tmp, dir) = copy_model();
    rewrite_weights(&dir, |tensors| {
        let t = tensors
            .iter_mut()
            .find(|t| t.0.contains("embeddings.word_embeddings"))
            .unwrap();
        t.1 = Dtype::I32;
    });
    expect_error(&dir, "model.safetensors", "unsupported dtype I32");
}

#[test]
fn unknown_architecture() {
    let (_tmp, dir) = copy_model();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"model_type\": \"bert\"", "\"model_type\": \"gpt2\""),
    )
    .unwrap();
    expect_error(&dir, "config.json", "unsupported architecture \"gpt2\"");
}

#[test]
fn config_missing_a_key() {
    let (_tmp, dir) = copy_model();
    edit_config(&dir, |config| {
        config.remove("num_attention_heads");
    });
    expect_error(&dir, "config.json", "missing key \"num_attention_heads\"");
}

/// XLM-RoBERTa-XL shares the name's start but puts LayerNorm before each sublayer: it must not
/// be loaded as RoBERTa. Neither may RoBERTa with relative position embeddings.
#[test]
fn roberta_variants_we_do_not_run_are_refused() {
    let (_tmp, dir) = copy_tiny_model("xlm-roberta-cls-mean-old");
    edit_config(&dir, |config| {
        config.insert("model_type".into(), "xlm-roberta-xl".into());
        config.insert(
            "architectures".into(),
            serde_json::json!(["XLMRobertaXLModel"]),
        );
    });
    expect_error(
        &dir,
        "config.json",
        "unsupported architecture \"xlm-roberta-xl\"",
    );
    edit_config(&dir, |config| {
        config.remove("model_type");
    });
    expect_error(
        &dir,
        "config.json",
        "unsupported architecture \"xlmrobertaxlmodel\"",
    );
    edit_config(&dir, |config| {
        config.insert("model_type".into(), "roberta".into());
        config.insert("position_embedding_type".into(), "relative_key".into());
    });
    expect_error(
        &dir,
        "config.json",
        "position_embedding_type \"relative_key\"",
    );
}

/// A config without `model_type` is recognised by its class name, as for every architecture.
#[test]
fn roberta_family_found_by_class_name() {
    let (_tmp, dir) = copy_tiny_model("xlm-roberta-cls-mean-old");
    let texts = [
        "Bonjour à tous.",
        "Ein längerer Satz, der etwas mehr Tokens braucht.",
    ];
    let expected = encode_folder(&dir, &texts);
    for class in ["XLMRobertaModel", "RobertaForMaskedLM", "CamembertModel"] {
        known_only_by_class(&dir, class);
        assert_eq!(encode_folder(&dir, &texts), expected, "{class}");
    }
}

/// ModernBERT's layer kinds and rotary bases in transformers 5's keys (`layer_types`,
/// `rope_parameters`, as the SPLADE reference model has them) give the rows the hub's older keys
/// give (the dense reference model's keys), and so does a config known only by its class name.
#[test]
fn modernbert_config_in_either_key_set() {
    let (_tmp, dir) = copy_tiny_model("modernbert-mean-normalize-new");
    let texts = [
        "A short one.",
        "A text long enough that the local layers see only part of it: their windows reach eight \
         tokens each way, so the first words are out of sight of the last ones.",
    ];
    let encode = |dir: &Path| encode_folder(dir, &texts);
    // Rotary bases other than the defaults, so that a key set whose thetas were not read
    // would give other rows.
    let reference = encode(&dir);
    edit_config(&dir, |config| {
        config.insert("global_rope_theta".into(), 20_000.0.into());
        config.insert("local_rope_theta".into(), 500.0.into());
    });
    let expected = encode(&dir);
    assert_ne!(expected, reference, "the older keys' thetas are read");
    edit_config(&dir, |config| {
        let every = config.remove("global_attn_every_n_layers").unwrap();
        assert_eq!(every, 2);
        let global = config.remove("global_rope_theta").unwrap();
        let local = config.remove("local_rope_theta").unwrap();
        config.insert(
            "layer_types".into(),
            serde_json::json!(["full_attention", "sliding_attention", "full_attention"]),
        );
        config.insert(
            "rope_parameters".into(),
            serde_json::json!({
                "full_attention": {"rope_theta": global, "rope_type": "default"},
                "sliding_attention": {"rope_theta": local, "rope_type": "default"},
            }),
        );
    });
    assert_eq!(encode(&dir), expected, "transformers 5 keys");
    known_only_by_class(&dir, "ModernBertForMaskedLM");
    assert_eq!(encode(&dir), expected, "class name only");
}

/// Each `(key, value, words)`: model `name` with config.json's `key` set to `value` fails to
/// load with an error naming config.json and saying `words`.
fn refused_config_edits(
    name: &str,
    cases: impl IntoIterator<Item = (&'static str, serde_json::Value, &'static str)>,
) {
    let (_tmp, dir) = copy_tiny_model(name);
    let original = std::fs::read_to_string(dir.join("config.json")).unwrap();
    for (key, value, words) in cases {
        std::fs::write(dir.join("config.json"), &original).unwrap();
        edit_config(&dir, |config| {
            config.insert(key.into(), value);
        });
        expect_error(&dir, "config.json", words);
    }
}

/// ModernBERT configs whose positions or attention we would compute differently are refused,
/// not loaded.
#[test]
fn modernbert_variants_we_do_not_run_are_refused() {
    let name = "modernbert-mean-normalize-new";
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "rope_parameters",
            serde_json::json!({"full_attention": {"rope_type": "yarn", "factor": 4.0}}),
            "rope_type \"yarn\"",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "longrope", "factor": 2.0}),
            "rope_type \"longrope\" is not supported",
        ),
        (
            "partial_rotary_factor",
            0.5.into(),
            "partial_rotary_factor 0.5 is not supported",
        ),
        (
            "layer_types",
            serde_json::json!(["full_attention", "sliding_attention"]),
            "layer_types has 2 entries for 3 layers",
        ),
        (
            "layer_types",
            serde_json::json!(["full_attention", "chunked_attention", "full_attention"]),
            "layer type \"chunked_attention\"",
        ),
    ];
    refused_config_edits(name, cases);
}

/// Qwen3's rotary base in transformers 5's keys (`rope_parameters`, `layer_types`) gives the
/// rows transformers 4's keys give (the reference model's), and so does a config known only by
/// its class name.
#[test]
fn qwen3_config_in_either_key_set() {
    let (_tmp, dir) = copy_tiny_model("qwen3-lasttoken-prompts-new");
    let texts = [
        "A short one.",
        "Two sentences this time. The last token saw both.",
    ];
    let encode = |dir: &Path| encode_folder(dir, &texts);
    let reference = encode(&dir);
    edit_config(&dir, |config| {
        config.insert("rope_theta".into(), 777.0.into());
    });
    let expected = encode(&dir);
    assert_ne!(expected, reference, "the older key's theta is read");
    edit_config(&dir, |config| {
        let theta = config.remove("rope_theta").unwrap();
        config.remove("rope_scaling");
        config.remove("use_sliding_window");
        config.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_theta": theta, "rope_type": "default"}),
        );
        config.insert(
            "layer_types".into(),
            serde_json::json!(vec!["full_attention"; 3]),
        );
    });
    assert_eq!(encode(&dir), expected, "transformers 5 keys");
    known_only_by_class(&dir, "Qwen3ForCausalLM");
    assert_eq!(encode(&dir), expected, "class name only");
}

/// Llama-family configs whose positions we would compute differently, or that do not
/// describe a valid layout of heads or windows, are refused, not loaded.
#[test]
fn llama_family_variants_we_do_not_run_are_refused() {
    let name = "qwen3-lasttoken-prompts-new";
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "layer_types",
            serde_json::json!(["full_attention", "sliding_attention"]),
            "layer_types has 2 entries for 3 layers",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "rope_type \"yarn\"",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "dynamic", "factor": 2.0}),
            "rope_type \"dynamic\" is not supported",
        ),
        (
            "num_key_value_heads",
            3.into(),
            "4 attention heads do not split into groups of num_key_value_heads 3",
        ),
        ("head_dim", 15.into(), "head_dim 15 must be even"),
    ];
    refused_config_edits(name, cases);
    let cases: [(&str, serde_json::Value, &str); 3] = [
        (
            "sliding_window",
            0.into(),
            "sliding_window must be at least 1",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            "rope_type \"llama3\" needs a number \"low_freq_factor\"",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "linear", "rope_theta": 10000.0}),
            "rope_type \"linear\" needs a number \"factor\"",
        ),
    ];
    refused_config_edits("mistral-lasttoken-sharded-new", cases);
}

/// Mistral's sliding window applies to every layer, and `null` means none: a text longer than
/// the window then gets other rows than the reference's (which has a window of 24), and a
/// window as long as the text gives the rows of no window at all.
#[test]
fn mistral_sliding_window_null_is_no_window() {
    let (_tmp, dir) = copy_tiny_model("mistral-lasttoken-sharded-new");
    let long = "many words in a row ".repeat(20);
    let texts = [long.as_str(), "short"];
    let windowed = encode_folder(&dir, &texts);
    edit_config(&dir, |config| {
        config.insert("sliding_window".into(), serde_json::Value::Null);
    });
    let unwindowed = encode_folder(&dir, &texts);
    edit_config(&dir, |config| {
        config.insert("sliding_window".into(), 1000.into());
    });
    let wide = encode_folder(&dir, &texts);
    assert_eq!(unwindowed, wide);
    assert_eq!(
        windowed.row(1),
        unwindowed.row(1),
        "a short text is within the window"
    );
    assert_ne!(
        windowed.row(0),
        unwindowed.row(0),
        "a long text reaches past it"
    );
}

/// For model_type llama, transformers 5 builds LlamaTokenizer's own pipeline, where
/// tokenizer_config.json's `legacy` decides whether a word right after a special token gets a
/// "▁" (ST's ids with either value: `generate.py`'s `llama_legacy_ids`).
#[test]
fn llama_tokenizer_legacy_decides_the_space_after_a_special_token() {
    let name = "llama-mean-biases-new";
    let (_tmp, dir) = copy_tiny_model(name);
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            pool_encode_tests::reference_dir(name).join("input_ids_legacy.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let path = dir.join("tokenizer_config.json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (legacy, key) in [(true, "legacy"), (false, "not_legacy")] {
        let mut config = original.clone();
        config["legacy"] = legacy.into();
        std::fs::write(&path, config.to_string()).unwrap();
        let encoder = SentenceEncoder::load(&dir, Device::default()).unwrap();
        let texts = reference["texts"].as_array().unwrap();
        for (text, expected) in texts.iter().zip(reference[key].as_array().unwrap()) {
            let text = text.as_str().unwrap();
            let expected: Vec<u32> = serde_json::from_value(expected.clone()).unwrap();
            let ours = encoder.tokenizer().encode(text).unwrap();
            assert_eq!(ours.get_ids(), &expected[..], "legacy {legacy}: {text:?}");
        }
    }
}

/// A sharded checkpoint's index must name shards beside it that hold what it says they hold;
/// each fault is an error naming the file at fault.
#[test]
fn broken_sharded_checkpoints() {
    let name = "mistral-lasttoken-sharded-new";
    let (_tmp, dir) = copy_tiny_model(name);
    let index_path = dir.join("model.safetensors.index.json");
    let original = std::fs::read_to_string(&index_path).unwrap();
    let index: serde_json::Value = serde_json::from_str(&original).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let embeddings_shard = map["embed_tokens.weight"].as_str().unwrap().to_string();
    let other_shard = map
        .values()
        .map(|v| v.as_str().unwrap())
        .find(|s| *s != embeddings_shard)
        .unwrap()
        .to_string();
    let with_map = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut index = index.clone();
        edit(index["weight_map"].as_object_mut().unwrap());
        std::fs::write(&index_path, index.to_string()).unwrap();
    };
    let index_file = "model.safetensors.index.json";

    with_map(&|map| {
        map.insert("embed_tokens.weight".into(), other_shard.clone().into());
    });
    expect_error(&dir, index_file, "\"embed_tokens.weight\" is not in");
    with_map(&|map| {
        map.insert(
            "embed_tokens.weight".into(),
            "../elsewhere.safetensors".into(),
        );
    });
    expect_error(&dir, index_file, "is not a file name beside the index");
    with_map(&|map| {
        map.remove("norm.weight");
    });
    // A tensor the index leaves out is still read from its shard, as transformers reads
    // whole shards.
    SentenceEncoder::load(&dir, Device::default()).unwrap();

    std::fs::write(&index_path, &original).unwrap();
    let shard = dir.join(&embeddings_shard);
    let moved = dir.join("moved.safetensors");
    std::fs::rename(&shard, &moved).unwrap();
    expect_error(&dir, &embeddings_shard, "missing required file");
    std::fs::rename(&moved, &shard).unwrap();

    // The same tensor in two shards.
    std::fs::copy(&shard, dir.join(&other_shard)).unwrap();
    expect_error(&dir, "safetensors", "is also in");

    std::fs::write(&index_path, "{\"weight_map\": ").unwrap();
    expect_error(&dir, index_file, "invalid JSON");
}

/// A short text and one that the tiny Gemma models' sliding windows (16 tokens) do not span.
const PAST_A_WINDOW: [&str; 2] = [
    "A short one.",
    "Two sentences this time, and enough words that the sliding layers' windows do not reach \
     from the first token to the last one.",
];

/// Gemma 3's rotary bases in transformers 5's keys (`rope_parameters` per layer type) and its
/// layer kinds from `sliding_window_pattern` give the rows transformers 4's keys give (the
/// reference model's: EmbeddingGemma's), and so does a config known only by its class name.
#[test]
fn gemma3_config_in_either_key_set() {
    let (_tmp, dir) = copy_tiny_model("gemma3-mean-dense-prompts-new");
    let encode = |dir: &Path| encode_folder(dir, &PAST_A_WINDOW);
    let reference = encode(&dir);
    for key in ["rope_theta", "rope_local_base_freq"] {
        let (_tmp, changed) = copy_tiny_model("gemma3-mean-dense-prompts-new");
        edit_config(&changed, |config| {
            config.insert(key.into(), 777.0.into());
        });
        assert_ne!(encode(&changed), reference, "{key} is read");
    }
    edit_config(&dir, |config| {
        let global = config.remove("rope_theta").unwrap();
        let local = config.remove("rope_local_base_freq").unwrap();
        config.remove("rope_scaling");
        config.insert(
            "rope_parameters".into(),
            serde_json::json!({
                "full_attention": {"rope_type": "default", "rope_theta": global},
                "sliding_attention": {"rope_type": "default", "rope_theta": local},
            }),
        );
        // Sliding, full, sliding: every second layer is a full one.
        config.remove("layer_types");
        config.insert("sliding_window_pattern".into(), 2.into());
    });
    assert_eq!(encode(&dir), reference, "transformers 5 keys");
    known_only_by_class(&dir, "Gemma3ForCausalLM");
    assert_eq!(encode(&dir), reference, "class name only");
}

/// Gemma 3 as the decoder it was trained as (`use_bidirectional_attention` false: full layers
/// see the tokens before, sliding layers the window's earlier tokens) gives ST's rows too
/// (`generate.py`'s `embeddings_causal.npy`).
#[test]
fn gemma3_as_a_causal_decoder() {
    let name = "gemma3-mean-dense-prompts-new";
    let (_tmp, dir) = copy_tiny_model(name);
    edit_config(&dir, |config| {
        config.insert("use_bidirectional_attention".into(), false.into());
    });
    let texts = texts();
    let ours = SentenceEncoder::load(&dir, Device::default())
        .unwrap()
        .encode(&texts, &pool_encode_encoder::EncodeOptions::default())
        .unwrap();
    let expected = reference(name, "embeddings_causal.npy");
    assert_close(&format!("{name}, causal"), &ours, &expected);
    assert_ne!(
        ours,
        reference(name, "embeddings.npy"),
        "attention is one-sided"
    );
}

/// Gemma 3 configs whose attention or positions we would compute differently, or that do not
/// describe a valid layout, are refused, not loaded.
#[test]
fn gemma3_variants_we_do_not_run_are_refused() {
    let name = "gemma3-mean-dense-prompts-new";
    let cases: [(&str, serde_json::Value, &str); 6] = [
        (
            "attn_logit_softcapping",
            50.0.into(),
            "attn_logit_softcapping",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "dynamic", "factor": 8.0}),
            "rope_type \"dynamic\" is not supported",
        ),
        (
            "rope_parameters",
            serde_json::json!({"full_attention": {"rope_type": "yarn", "factor": 4.0}}),
            "rope_type \"yarn\"",
        ),
        (
            "num_key_value_heads",
            3.into(),
            "4 attention heads do not split into groups of num_key_value_heads 3",
        ),
        (
            "layer_types",
            serde_json::json!(["full_attention", "sliding_attention"]),
            "layer_types has 2 entries for 3 layers",
        ),
        (
            "sliding_window",
            0.into(),
            "sliding_window must be at least 1",
        ),
    ];
    refused_config_edits(name, cases);
    // transformers would divide by the pattern where no `layer_types` lists the layers.
    let (_tmp, dir) = copy_tiny_model(name);
    edit_config(&dir, |config| {
        config.remove("layer_types");
        config.insert("sliding_window_pattern".into(), 0.into());
    });
    expect_error(
        &dir,
        "config.json",
        "sliding_window_pattern must be at least 1",
    );
}

/// Gemma 3 and T5 in float16 are refused with the precisions they support, whatever the
/// device (their activations overflow float16; EmbeddingGemma's card says float32 or bfloat16).
#[test]
fn models_whose_activations_overflow_float16_are_refused_it() {
    for name in ["gemma3-mean-dense-prompts-new", "t5-mean-dense-new"] {
        let dir = tiny_model_dir(name);
        let error =
            match SentenceEncoder::load_with_precision(&dir, Device::default(), Precision::F16) {
                Ok(_) => panic!("{name} loaded in float16"),
                Err(e) => e.to_string(),
            };
        assert!(
            error.contains("float16") && error.contains("bf16"),
            "{name}: {error}"
        );
    }
}

/// Gemma 2 without a soft cap (`attn_logit_softcapping` null) gives ST's rows too
/// (`generate.py`'s `embeddings_no_softcap.npy`); absent, the key means Gemma2Config's 50,
/// which caps scores as well.
#[test]
fn gemma2_soft_cap_null_and_absent() {
    let name = "gemma2-lasttoken-softcap-new";
    let texts = texts();
    let encode = |edit: fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let (_tmp, dir) = copy_tiny_model(name);
        edit_config(&dir, edit);
        SentenceEncoder::load(&dir, Device::default())
            .unwrap()
            .encode(&texts, &pool_encode_encoder::EncodeOptions::default())
            .unwrap()
    };
    let uncapped = encode(|config| {
        config.insert("attn_logit_softcapping".into(), serde_json::Value::Null);
    });
    let expected = reference(name, "embeddings_no_softcap.npy");
    assert_close(&format!("{name}, no soft cap"), &uncapped, &expected);
    assert_ne!(
        uncapped,
        reference(name, "embeddings.npy"),
        "the reference model's scores are capped"
    );
    let default_cap = encode(|config| {
        config.remove("attn_logit_softcapping");
    });
    assert_ne!(default_cap, uncapped, "absent means a cap of 50");
}

/// Gemma 2's config in transformers 5's keys (`rope_parameters`, `layer_types`) gives the rows
/// its transformers 4 keys give (bge-multilingual-gemma2's, the reference model's: layers
/// alternate from a sliding one), and so does a config known only by its class name.
#[test]
fn gemma2_config_in_either_key_set() {
    let name = "gemma2-lasttoken-softcap-new";
    let (_tmp, dir) = copy_tiny_model(name);
    let encode = |dir: &Path| encode_folder(dir, &PAST_A_WINDOW);
    let reference = encode(&dir);
    for (key, value) in [
        ("rope_theta", serde_json::json!(777.0)),
        (
            "layer_types",
            serde_json::json!(["full_attention", "sliding_attention", "sliding_attention"]),
        ),
    ] {
        let (_tmp, changed) = copy_tiny_model(name);
        edit_config(&changed, |config| {
            config.insert(key.into(), value);
        });
        assert_ne!(encode(&changed), reference, "{key} is read");
    }
    edit_config(&dir, |config| {
        let theta = config.remove("rope_theta").unwrap();
        config.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "default", "rope_theta": theta}),
        );
        config.insert(
            "layer_types".into(),
            serde_json::json!(["sliding_attention", "full_attention", "sliding_attention"]),
        );
    });
    assert_eq!(encode(&dir), reference, "transformers 5 keys");
    known_only_by_class(&dir, "Gemma2ForCausalLM");
    assert_eq!(encode(&dir), reference, "class name only");
}

/// Gemma 2 configs we would compute differently from transformers, or that describe no valid
/// attention, are refused, not loaded.
#[test]
fn gemma2_variants_we_do_not_run_are_refused() {
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "sliding_window",
            serde_json::Value::Null,
            "sliding_window null is not supported for Gemma",
        ),
        (
            "use_bidirectional_attention",
            true.into(),
            "use_bidirectional_attention is not supported for Gemma 2",
        ),
        (
            "attn_logit_softcapping",
            0.0.into(),
            "attn_logit_softcapping must be positive",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "rope_type \"yarn\" is not supported",
        ),
        (
            "sliding_window",
            0.into(),
            "sliding_window must be at least 1",
        ),
    ];
    refused_config_edits("gemma2-lasttoken-softcap-new", cases);
}

/// A T5 checkpoint known only by its class name, or whose word embeddings are the encoder's
/// tied copy (`encoder.embed_tokens`) rather than `shared`, gives the same rows.
#[test]
fn t5_found_by_class_name_and_by_either_embedding_name() {
    let name = "t5-mean-dense-new";
    let (_tmp, dir) = copy_tiny_model(name);
    let reference = encode_folder(&dir, &PAST_A_WINDOW);
    known_only_by_class(&dir, "T5EncoderModel");
    assert_eq!(
        encode_folder(&dir, &PAST_A_WINDOW),
        reference,
        "class name only"
    );
    rewrite_weights(&dir, |tensors| {
        for (name, ..) in tensors.iter_mut() {
            if name == "shared.weight" {
                *name = "encoder.embed_tokens.weight".into();
            }
        }
    });
    assert_eq!(
        encode_folder(&dir, &PAST_A_WINDOW),
        reference,
        "encoder.embed_tokens"
    );
}

/// T5 configs that describe no encoder we can run are refused, not loaded.
#[test]
fn t5_variants_we_do_not_run_are_refused() {
    let cases: [(&str, serde_json::Value, &str); 4] = [
        ("is_decoder", true.into(), "is_decoder"),
        (
            "feed_forward_proj",
            "swiglu-gelu".into(),
            "feed_forward_proj \"swiglu-gelu\" is not",
        ),
        (
            "feed_forward_proj",
            "gated-mish".into(),
            "unsupported activation \"mish\"",
        ),
        (
            "relative_attention_max_distance",
            2.into(),
            "needs at least 4 buckets and a distance past a quarter of them",
        ),
    ];
    refused_config_edits("t5-mean-dense-new", cases);
}

/// With no `tokenizer_class` in tokenizer_config.json, transformers takes the class from
/// config.json's model_type, with its default options: this cased DistilBERT file then
/// lowercases (ST's ids, `generate.py without-tokenizer-class`; 186 of the 211 texts differ
/// from the file's own pipeline).
#[test]
fn tokenizer_class_from_model_type_when_the_config_names_none() {
    let name = "distilbert-weightedmean-old";
    let (_tmp, dir) = copy_tiny_model(name);
    let path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("tokenizer_class");
    std::fs::write(&path, config.to_string()).unwrap();
    let encoder = SentenceEncoder::load(&dir, Device::default()).unwrap();
    let expected = reference_ids_in(name, "input_ids_without_tokenizer_class.jsonl");
    let texts = texts();
    assert_eq!(expected.len(), texts.len());
    for (i, (text, ids)) in texts.iter().zip(expected).enumerate() {
        let ours = encoder.tokenizer().encode(text).unwrap();
        assert_eq!(ours.get_ids(), &ids[..], "text {i} ({text:?})");
    }
}

/// tokenizer_config.json decides the tokenizer class's pipeline and the pad token: a broken one
/// is an error, even where sentence_bert_config.json gives the max length.
#[test]
fn invalid_json_in_tokenizer_config() {
    // An old-format model: its max length is in sentence_bert_config.json.
    let (_tmp, dir) = copy_tiny_model("bert-mean-normalize-old");
    std::fs::write(dir.join("tokenizer_config.json"), "{\"tokenizer_class\": ").unwrap();
    expect_error(&dir, "tokenizer_config.json", "invalid JSON");
}

#[test]
fn invalid_json_in_modules_json() {
    let (_tmp, dir) = copy_model();
    std::fs::write(dir.join("modules.json"), "[{\"idx\": 0,").unwrap();
    expect_error(&dir, "modules.json", "invalid JSON");
}

#[test]
fn unsupported_module_type() {
    let (_tmp, dir) = copy_model();
    let modules = std::fs::read_to_string(dir.join("modules.json")).unwrap();
    std::fs::write(
        dir.join("modules.json"),
        modules.replace("modules.pooling.Pooling", "modules.lstm.LSTM"),
    )
    .unwrap();
    expect_error(&dir, "modules.json", "unsupported module type");
}

#[test]
fn unknown_pooling_mode() {
    let (_tmp, dir) = copy_model();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode": "median"}"#,
    )
    .unwrap();
    expect_error(
        &dir,
        "1_Pooling/config.json",
        "unknown pooling mode \"median\"",
    );
}

#[test]
fn dense_input_size_mismatch() {
    let (_tmp, dir) = copy_model();
    let config = std::fs::read_to_string(dir.join("2_Dense/config.json")).unwrap();
    std::fs::write(
        dir.join("2_Dense/config.json"),
        config.replace("\"in_features\": 32", "\"in_features\": 48"),
    )
    .unwrap();
    expect_error(
        &dir,
        "2_Dense/config.json",
        "in_features is 48 but the previous module outputs 32",
    );
}

#[test]
fn unsupported_dense_activation() {
    let (_tmp, dir) = copy_model();
    let config = std::fs::read_to_string(dir.join("2_Dense/config.json")).unwrap();
    std::fs::write(
        dir.join("2_Dense/config.json"),
        config.replace("activation.Tanh", "activation.Softsign"),
    )
    .unwrap();
    expect_error(
        &dir,
        "2_Dense/config.json",
        "unsupported Dense activation_function",
    );
}

#[test]
fn corrupt_tokenizer() {
    let (_tmp, dir) = copy_model();
    std::fs::write(dir.join("tokenizer.json"), "{\"version\": \"1.0\"}").unwrap();
    expect_error(&dir, "tokenizer.json", "cannot load tokenizer");
}

fn expect_sparse_error(dir: &Path, file: &str, words: &str) {
    let err = match pool_encode_encoder::SparseEncoder::load(dir, Device::default()) {
        Ok(_) => panic!("loading a SPLADE model with a broken {file} succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(file), "error does not name {file}: {err}");
    assert!(err.contains(words), "error does not say {words:?}: {err}");
}

#[test]
fn unknown_splade_pooling_strategy() {
    let (_tmp, dir) = copy_tiny_model("splade-bert-tied-max");
    let path = dir.join("1_SpladePooling/config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"max\"", "\"mean\"");
    std::fs::write(&path, text).unwrap();
    expect_sparse_error(
        &dir,
        "1_SpladePooling/config.json",
        "pooling_strategy \"mean\"",
    );
}

#[test]
fn missing_mlm_head_weights() {
    let (_tmp, dir) = copy_tiny_model("splade-bert-tied-max");
    rewrite_weights(&dir, |tensors| {
        tensors.retain(|(name, ..)| !name.contains("predictions.transform.dense"));
    });
    expect_sparse_error(
        &dir,
        "model.safetensors",
        "cls.predictions.transform.dense.weight",
    );
}

#[test]
fn router_with_two_transformer_routes() {
    let (_tmp, dir) = copy_tiny_model("splade-inference-free");
    let path = dir.join("router_config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "\"query_0_SparseStaticEmbedding\"\n        ]",
        "\"document_0_Transformer\",\n            \"document_1_SpladePooling\"\n        ]",
    );
    std::fs::write(&path, text).unwrap();
    expect_sparse_error(
        &dir,
        "router_config.json",
        "more than one route runs a transformer",
    );
}

#[test]
fn sparse_static_embedding_of_the_wrong_size() {
    let (_tmp, dir) = copy_tiny_model("splade-inference-free");
    let static_dir = dir.join("query_0_SparseStaticEmbedding");
    rewrite_weights(&static_dir, |tensors| {
        let (_, _, shape, bytes) = &mut tensors[0];
        shape[0] -= 1;
        bytes.truncate(bytes.len() - 4);
    });
    expect_sparse_error(
        &dir,
        "query_0_SparseStaticEmbedding/model.safetensors",
        "shape",
    );
}

#[test]
fn static_table_smaller_than_the_vocabulary() {
    let (_tmp, dir) = copy_tiny_model("static-wordpiece-new");
    let table = dir.join("0_StaticEmbedding");
    rewrite_weights(&table, |tensors| {
        let (_, _, shape, bytes) = &mut tensors[0];
        shape[0] -= 1;
        bytes.truncate(bytes.len() - 4 * shape[1]);
    });
    expect_error(
        &dir,
        "0_StaticEmbedding/model.safetensors",
        "rows but the tokenizer has",
    );
}

#[test]
fn static_mapping_past_the_table() {
    let (_tmp, dir) = copy_tiny_model("static-model2vec-bpe-old");
    rewrite_weights(&dir, |tensors| {
        let (_, dtype, _, bytes) = tensors.iter_mut().find(|t| t.0 == "mapping").unwrap();
        assert_eq!(*dtype, Dtype::I64);
        bytes[..8].copy_from_slice(&1_000_000i64.to_le_bytes());
    });
    expect_error(
        &dir,
        "model.safetensors",
        "mapping sends token 0 to row 1000000",
    );
}

#[test]
fn static_table_missing() {
    let (_tmp, dir) = copy_tiny_model("static-model2vec-bpe-old");
    rewrite_weights(&dir, |tensors| {
        tensors.retain(|t| t.0 != "embeddings");
    });
    expect_error(&dir, "model.safetensors", "embeddings (model2vec)");
}

#[test]
fn static_embedding_without_its_tokenizer() {
    let (_tmp, dir) = copy_tiny_model("static-wordpiece-new");
    std::fs::remove_file(dir.join("0_StaticEmbedding/tokenizer.json")).unwrap();
    expect_error(&dir, "0_StaticEmbedding/tokenizer.json", "missing");
}

#[test]
fn pooling_after_a_static_embedding() {
    let (_tmp, dir) = copy_tiny_model("static-wordpiece-new");
    let modules = std::fs::read_to_string(dir.join("modules.json")).unwrap();
    let mut modules: Vec<serde_json::Value> = serde_json::from_str(&modules).unwrap();
    modules.push(serde_json::json!({
        "idx": 1, "name": "1", "path": "1_Pooling",
        "type": "sentence_transformers.models.Pooling"
    }));
    std::fs::create_dir(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 48, "pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.json"),
        serde_json::to_string(&modules).unwrap(),
    )
    .unwrap();
    expect_error(&dir, "modules.json", "takes no Pooling");
}
