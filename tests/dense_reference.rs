//! Every output of the dense encoder against sentence-transformers' own outputs for the same
//! texts (tests/data/texts.jsonl: prose of every length, texts past max_seq_length, empty and
//! whitespace-only texts, non-Latin scripts, emoji, control characters).

use pool_encode_encoder::{
    Embeddings, EncodeOptions, Quantization, QuantizationRanges, SentenceEncoder, SimilarityFn,
    quantize_embeddings,
};
use pool_encode_io::ValueType;
use pool_encode_model::ArchitectureConfig;
use pool_encode_tests::*;

fn options() -> EncodeOptions {
    EncodeOptions {
        batch_size: 16,
        ..Default::default()
    }
}

/// All checks for one model folder whose references live under `reference_dir(name)`.
fn check_model(name: &str, dir: &std::path::Path) {
    let texts = texts();
    let meta = reference_meta(name);
    let mut encoder = SentenceEncoder::load(dir, test_device()).unwrap();
    // ST's max_seq_length is math.inf for a StaticEmbedding model (null in meta.json): its
    // texts are cut only where its tokenizer file says, and it has no token embeddings.
    let static_table = meta["max_seq_length"].is_null();
    if !static_table {
        assert_eq!(
            encoder.max_seq_length() as u64,
            meta["max_seq_length"].as_u64().unwrap(),
            "{name}: max_seq_length"
        );
    }
    assert_eq!(
        encoder.embedding_dimension() as u64,
        meta["embedding_dimension"].as_u64().unwrap(),
        "{name}: embedding_dimension"
    );
    let similarity = SimilarityFn::parse(meta["similarity_fn_name"].as_str().unwrap()).unwrap();
    assert_eq!(
        encoder.similarity_fn(),
        similarity,
        "{name}: similarity_fn_name"
    );

    // Token ids, text by text and all at once (as a chunk is tokenized); nothing is kept of
    // what truncation cut off the long texts.
    let all = encoder.tokenizer().encode_all(&texts).unwrap();
    for (i, (text, ids)) in texts.iter().zip(reference_input_ids(name)).enumerate() {
        for ours in [&encoder.tokenizer().encode(text).unwrap(), &all[i]] {
            assert_eq!(
                ours.get_ids(),
                &ids[..],
                "{name}: token ids of text {i} ({text:?})"
            );
            assert!(ours.get_overflowing().is_empty(), "{name}: text {i}");
        }
    }

    let embeddings = encoder.encode(&texts, &options()).unwrap();
    assert_close_on(
        test_device(),
        &format!("{name}: embeddings"),
        &embeddings,
        &reference(name, "embeddings.npy"),
    );

    // Batching must not change the result: one text at a time and all in one batch.
    let single = encoder
        .encode(
            &texts[..8],
            &EncodeOptions {
                batch_size: 1,
                ..options()
            },
        )
        .unwrap();
    let expected_first = Embeddings::new(
        reference(name, "embeddings.npy").as_slice()[..8 * single.dim()].to_vec(),
        8,
        single.dim(),
    );
    assert_close_on(
        test_device(),
        &format!("{name}: batch_size 1"),
        &single,
        &expected_first,
    );

    let (a, b) = (rows(&embeddings, 0..6), rows(&embeddings, 6..12));
    assert_close_on(
        test_device(),
        &format!("{name}: similarity"),
        &encoder.similarity(&a, &b),
        &reference(name, "similarity.npy"),
    );
    let pairwise = encoder.similarity_pairwise(&a, &b);
    assert_close_on(
        test_device(),
        &format!("{name}: similarity_pairwise"),
        &Embeddings::new(pairwise, 1, 6),
        &reshape(reference(name, "similarity_pairwise.npy"), 1, 6),
    );

    let truncated = encoder
        .encode(
            &texts,
            &EncodeOptions {
                truncate_dim: Some(8),
                normalize_embeddings: true,
                ..options()
            },
        )
        .unwrap();
    assert_close_on(
        test_device(),
        &format!("{name}: truncate_dim 8 + normalize"),
        &truncated,
        &reference(name, "truncate_dim_8_normalized.npy"),
    );

    if static_table {
        assert!(encoder.encode_tokens(&texts, &options()).is_err(), "{name}");
        assert!(encoder.set_max_seq_length(40).is_err(), "{name}");
        return;
    }
    // Token embeddings of the first 24 and the last 31 texts, concatenated in the reference.
    let picked: Vec<&String> = meta["token_embeddings_texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &texts[i.as_u64().unwrap() as usize])
        .collect();
    let tokens = encoder.encode_tokens(&picked, &options()).unwrap();
    let lengths: Vec<usize> = tokens.iter().map(Embeddings::rows).collect();
    let expected_lengths: Vec<usize> = meta["token_embeddings_lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(lengths, expected_lengths, "{name}: token counts");
    let hidden = tokens[0].dim();
    let all: Vec<f32> = tokens
        .iter()
        .flat_map(|t| t.as_slice().iter().copied())
        .collect();
    let total = all.len() / hidden;
    assert_close_on(
        test_device(),
        &format!("{name}: token embeddings"),
        &Embeddings::new(all, total, hidden),
        &reference(name, "token_embeddings.npy"),
    );

    if meta["prompts"]
        .as_object()
        .is_some_and(|p| p.values().any(|v| v.as_str() != Some("")))
    {
        assert_close_on(
            test_device(),
            &format!("{name}: encode_query"),
            &encoder.encode_query(&texts, &options()).unwrap(),
            &reference(name, "encode_query.npy"),
        );
        assert_close_on(
            test_device(),
            &format!("{name}: encode_document"),
            &encoder.encode_document(&texts, &options()).unwrap(),
            &reference(name, "encode_document.npy"),
        );
    }

    encoder.set_max_seq_length(40).unwrap();
    assert_eq!(encoder.max_seq_length(), 40);
    assert_close_on(
        test_device(),
        &format!("{name}: max_seq_length 40"),
        &encoder.encode(&texts, &options()).unwrap(),
        &reference(name, "embeddings_max_seq_length_40.npy"),
    );
    // Past the position table, where the model has one (T5's relative positions have none).
    let positions = encoder
        .folder()
        .transformer()
        .unwrap()
        .architecture
        .max_input_tokens();
    assert_eq!(
        encoder.set_max_seq_length(100_000).is_ok(),
        positions >= 100_000,
        "{name}: max_seq_length 100,000 with {positions} positions"
    );
}

fn rows(m: &Embeddings, range: std::ops::Range<usize>) -> Embeddings {
    let d = m.dim();
    Embeddings::new(
        m.as_slice()[range.start * d..range.end * d].to_vec(),
        range.len(),
        d,
    )
}

fn reshape(m: Embeddings, rows: usize, dim: usize) -> Embeddings {
    Embeddings::new(m.into_vec(), rows, dim)
}

macro_rules! tiny_model_tests {
    ($($test:ident => $name:literal,)*) => {$(
        #[test]
        fn $test() {
            check_model($name, &tiny_model_dir($name));
        }
    )*};
}

tiny_model_tests! {
    bert_mean_normalize_old => "bert-mean-normalize-old",
    bert_cls_dense_new => "bert-cls-dense-new",
    bert_allmodes_old => "bert-allmodes-old",
    bert_prompts_new => "bert-prompts-new",
    distilbert_max_dense_normalize_new => "distilbert-max-dense-normalize-new",
    distilbert_weightedmean_old => "distilbert-weightedmean-old",
    mpnet_mean_normalize_new => "mpnet-mean-normalize-new",
    mpnet_multi_old => "mpnet-multi-old",
    distilbert_lowercase_old => "distilbert-lowercase-old",
    roberta_mean_normalize_new => "roberta-mean-normalize-new",
    xlm_roberta_cls_mean_old => "xlm-roberta-cls-mean-old",
    bert_class_config_wins_new => "bert-class-config-wins-new",
    modernbert_mean_normalize_new => "modernbert-mean-normalize-new",
    qwen3_lasttoken_prompts_new => "qwen3-lasttoken-prompts-new",
    gemma3_mean_dense_prompts_new => "gemma3-mean-dense-prompts-new",
    mistral_lasttoken_sharded_new => "mistral-lasttoken-sharded-new",
    qwen2_lasttoken_sliding_new => "qwen2-lasttoken-sliding-new",
    llama_mean_biases_new => "llama-mean-biases-new",
    gemma2_lasttoken_softcap_new => "gemma2-lasttoken-softcap-new",
    t5_mean_dense_new => "t5-mean-dense-new",
    mt5_max_gated_old => "mt5-max-gated-old",
    static_wordpiece_new => "static-wordpiece-new",
    static_model2vec_bpe_old => "static-model2vec-bpe-old",
}

/// A CPU encoder runs a batch per thread at once by default (its ops split over idle
/// threads); any number in flight gives the same rows, bit for bit, as one at a time.
#[test]
fn cpu_batches_in_flight_give_the_same_rows() {
    let texts = texts();
    let small = EncodeOptions {
        batch_size: 4,
        ..options()
    };
    let mut encoder =
        SentenceEncoder::load(tiny_model_dir(TINY_MODELS[0]), "cpu:3".parse().unwrap()).unwrap();
    assert_eq!(encoder.concurrent_batches(), 3);
    encoder.set_concurrent_batches(1).unwrap();
    let one_at_a_time = encoder.encode(&texts, &small).unwrap();
    for batches in [2, 3, 8] {
        encoder.set_concurrent_batches(batches).unwrap();
        assert_eq!(encoder.concurrent_batches(), batches);
        let rows = encoder.encode(&texts, &small).unwrap();
        assert_eq!(
            rows.as_slice(),
            one_at_a_time.as_slice(),
            "{batches} in flight"
        );
    }
    assert!(encoder.set_concurrent_batches(0).is_err());
    let single = SentenceEncoder::load(tiny_model_dir(TINY_MODELS[0]), "cpu:1".parse().unwrap());
    assert_eq!(single.unwrap().concurrent_batches(), 1);
}

#[test]
fn all_minilm_l6_v2() {
    check_model("all-MiniLM-L6-v2", &minilm_dir());
}

/// ST's `quantize_embeddings` on ST's own float rows gives exactly our bytes (same arithmetic);
/// ST's `encode(precision=…)` gives ours up to values at a quantization edge.
#[test]
fn quantized_like_sentence_transformers() {
    let floats = reference("all-MiniLM-L6-v2", "embeddings.npy");
    for quantization in [
        Quantization::Int8,
        Quantization::Uint8,
        Quantization::Binary,
        Quantization::Ubinary,
    ] {
        let ours = quantize_embeddings(&floats, quantization, None).unwrap();
        let (expected, values, rows, dim) =
            quantized_reference(&format!("{quantization}_of_reference.npy"));
        assert_eq!(values, ValueType::of(Some(quantization)), "{quantization}");
        assert_eq!((ours.rows(), ours.dim()), (rows, dim), "{quantization}");
        assert!(
            ours.as_u8() == expected,
            "{quantization}: bytes differ from ST's"
        );
    }
    // Ranges from a calibration set: values outside them are clipped.
    let calibration = QuantizationRanges::from_embeddings(&rows(&floats, 0..50)).unwrap();
    let ours = quantize_embeddings(&floats, Quantization::Int8, Some(&calibration)).unwrap();
    let (expected, ..) = quantized_reference("int8_calibrated_of_reference.npy");
    assert!(
        ours.as_u8() == expected,
        "calibrated int8 differs from ST's"
    );
    // A width that is not a multiple of 8: each row padded to whole bytes.
    let mut narrow = floats.clone();
    narrow.truncate_dim(20);
    let ours = quantize_embeddings(&narrow, Quantization::Ubinary, None).unwrap();
    let (expected, _, rows, dim) = quantized_reference("ubinary_truncate_dim_20_of_reference.npy");
    assert_eq!((ours.rows(), ours.dim()), (rows, dim));
    assert!(
        ours.as_u8() == expected,
        "ubinary of 20 dimensions differs from ST's"
    );

    // End to end: the model's rows (within the f32 bounds of ST's), then quantized; int8 takes
    // its ranges from our rows as ST's encode does from its own, so an edge moves by at most
    // the bound too.
    let device = test_device();
    let encoder = SentenceEncoder::load(minilm_dir(), device).unwrap();
    let embeddings = encoder.encode(&texts(), &options()).unwrap();
    let (_, bound) = f32_bounds(device, &floats);
    let st_ranges = QuantizationRanges::from_embeddings(&floats).unwrap();
    for (quantization, tolerance) in [
        (Quantization::Int8, 2.0 * bound),
        (Quantization::Ubinary, bound),
    ] {
        let ours = quantize_embeddings(&embeddings, quantization, None).unwrap();
        let (expected, ..) = quantized_reference(&format!("encode_{quantization}.npy"));
        let differ = assert_quantized_close(
            &format!("encode {quantization}"),
            ours.as_u8(),
            &expected,
            &floats,
            quantization,
            Some(&st_ranges),
            tolerance,
        );
        eprintln!(
            "encode {quantization}: {differ} of {} values differ from ST's, each at an edge",
            expected.len()
        );
    }
}

#[test]
fn every_tiny_model_is_covered() {
    let mut on_disk: Vec<String> = std::fs::read_dir(data_dir().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    // Every model folder has a reference test: the dense ones here, the SPLADE ones in
    // sparse_reference.rs.
    let mut listed: Vec<String> = TINY_MODELS
        .iter()
        .chain(&SPARSE_MODELS)
        .map(|s| s.to_string())
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

/// Every rotary layer's frequencies equal, to the bit, the `inv_freq` transformers builds from
/// the same config.json (`tests/reference/generate_rope.py`): transformers 4's and 5's keys,
/// one entry or one per layer type, and the scaled variants we run (`linear`, `llama3` in
/// each of its three bands).
#[test]
fn rotary_frequencies_equal_transformers() {
    let path = data_dir().join("reference").join("rope_frequencies.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 11, "{} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, case["config"].to_string()).unwrap();
        let config = ArchitectureConfig::load(&config_path).unwrap();
        let layers = config.layer_attention().expect("a rotary model");
        let expected = case["inverse_frequencies"].as_array().unwrap();
        assert_eq!(layers.len(), expected.len(), "{name}: layers");
        for (i, (layer, expected)) in layers.iter().zip(expected).enumerate() {
            let expected: Vec<f32> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_f64().unwrap() as f32)
                .collect();
            let ours = layer.rope.inverse_frequencies(config.heads().dim);
            assert_eq!(ours, expected, "{name}: layer {i}");
        }
    }
}
