//! The sparse (SPLADE) encoder against sentence-transformers' `SparseEncoder` on the same texts
//! as the dense references (tests/data/texts.jsonl), for tiny BERT and DistilBERT MLM models
//! with tied and untied decoders, max and sum pooling, both activations, `max_active_dims`,
//! every folder layout ST loads, and an inference-free (Router) model.

use pool_encode_encoder::{
    Device, EncodeOptions, SentenceEncoder, SimilarityFn, SparseEmbeddings, SparseEncoder,
};
use pool_encode_tests::*;

fn options() -> EncodeOptions {
    EncodeOptions {
        batch_size: 16,
        ..Default::default()
    }
}

fn reference_rows(name: &str, file: &str, dim: usize) -> SparseEmbeddings {
    read_sparse_jsonl(&reference_dir(name).join(file), dim)
}

fn check_rows(name: &str, file: &str, ours: &SparseEmbeddings) {
    let expected = reference_rows(name, file, ours.dim());
    assert_sparse_close(
        &format!("{name}: {file}"),
        ours,
        &expected,
        sparse_bound(test_device(), &expected),
    );
}

fn assert_matrix_close(what: &str, ours: &[f32], expected: &serde_json::Value) {
    let expected: Vec<f32> = match expected {
        serde_json::Value::Array(rows) if rows.first().is_some_and(|r| r.is_array()) => rows
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect(),
        other => serde_json::from_value(other.clone()).unwrap(),
    };
    assert_eq!(ours.len(), expected.len(), "{what}: size");
    for (k, (a, b)) in ours.iter().zip(&expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{what}: entry {k}: {a} vs sentence-transformers {b}"
        );
    }
}

fn check_model(name: &str) {
    let texts = texts();
    let meta = reference_meta(name);
    let encoder = SparseEncoder::load(tiny_model_dir(name), test_device()).unwrap();
    let dim = encoder.embedding_dimension();
    assert_eq!(dim as u64, meta["embedding_dimension"].as_u64().unwrap());
    assert_eq!(
        encoder.similarity_fn(),
        SimilarityFn::parse(meta["similarity_fn_name"].as_str().unwrap()).unwrap(),
        "{name}: similarity function"
    );
    assert_eq!(
        encoder.max_active_dims().map(|k| k as u64),
        meta["max_active_dims"].as_u64(),
        "{name}: max_active_dims"
    );
    let router = meta["router"].as_bool().unwrap();
    assert_eq!(encoder.is_inference_free(), router, "{name}: router");
    if !router {
        // A router reports the largest of its routes' limits (the static tokenizer's 1e30).
        assert_eq!(
            encoder.max_seq_length() as u64,
            meta["max_seq_length"].as_u64().unwrap(),
            "{name}: max_seq_length"
        );
    }

    let rows = encoder.encode(&texts, &options()).unwrap();
    check_rows(name, "encode.jsonl", &rows);
    let top8 = encoder
        .encode(
            &texts,
            &EncodeOptions {
                max_active_dims: Some(8),
                ..options()
            },
        )
        .unwrap();
    assert!(top8.iter().all(|r| r.len() <= 8));
    check_rows(name, "max_active_dims_8.jsonl", &top8);
    if router {
        check_rows(
            name,
            "encode_query.jsonl",
            &encoder.encode_query(&texts, &options()).unwrap(),
        );
        check_rows(
            name,
            "encode_document.jsonl",
            &encoder.encode_document(&texts, &options()).unwrap(),
        );
    }

    // Batching must not change the rows: one text at a time.
    let mut single = SparseEmbeddings::new(dim);
    for text in &texts[..12] {
        single.extend(&encoder.encode(&[text], &options()).unwrap());
    }
    let mut batched = SparseEmbeddings::new(dim);
    for r in 0..12 {
        let row = rows.row(r);
        batched.push(row.indices, row.values);
    }
    assert_sparse_close(&format!("{name}: one at a time"), &single, &batched, 1e-5);

    let sparsity = SparseEncoder::sparsity(&rows);
    let expected_active = meta["sparsity"]["active_dims"].as_f64().unwrap();
    assert!(
        (sparsity.active_dims - expected_active).abs() < 0.05,
        "{name}: active dims {} vs sentence-transformers {expected_active}",
        sparsity.active_dims
    );
    let expected_ratio = meta["sparsity"]["sparsity_ratio"].as_f64().unwrap();
    assert!((sparsity.sparsity_ratio - expected_ratio).abs() < 1e-4);

    let mut first12 = SparseEmbeddings::new(dim);
    for r in 0..12 {
        let row = rows.row(r);
        first12.push(row.indices, row.values);
    }
    let decoded = encoder.decode(&first12, Some(5));
    let expected = meta["decode_top_5"].as_array().unwrap();
    for (r, (ours, theirs)) in decoded.iter().zip(expected).enumerate() {
        let theirs = theirs.as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: decode row {r}");
        for ((token, weight), pair) in ours.iter().zip(theirs) {
            assert_eq!(token, pair[0].as_str().unwrap(), "{name}: decode row {r}");
            assert!((weight - pair[1].as_f64().unwrap() as f32).abs() <= 1e-4);
        }
    }

    let mut a = SparseEmbeddings::new(dim);
    let mut b = SparseEmbeddings::new(dim);
    for r in 0..6 {
        a.push(rows.row(r).indices, rows.row(r).values);
        b.push(rows.row(r + 6).indices, rows.row(r + 6).values);
    }
    assert_matrix_close(
        &format!("{name}: similarity"),
        encoder.similarity(&a, &b).as_slice(),
        &meta["similarity"],
    );
    assert_matrix_close(
        &format!("{name}: similarity_pairwise"),
        &encoder.similarity_pairwise(&a, &b),
        &meta["similarity_pairwise"],
    );
    assert_matrix_close(
        &format!("{name}: cosine similarity"),
        a.similarity(&b, SimilarityFn::Cosine).as_slice(),
        &meta["similarity_cosine"],
    );
}

#[test]
fn splade_bert_tied_decoder_max_pooling() {
    check_model("splade-bert-tied-max");
}

#[test]
fn splade_bert_untied_decoder_sum_pooling_old_layout() {
    check_model("splade-bert-untied-sum-old");
}

#[test]
fn splade_distilbert_untied_log1p_relu_with_max_active_dims() {
    check_model("splade-distilbert-untied-log1p");
}

#[test]
fn splade_from_a_bare_masked_lm_folder() {
    check_model("splade-distilbert-tied-bare");
}

#[test]
fn inference_free_splade_router() {
    check_model("splade-inference-free");
}

#[test]
fn splade_xlm_roberta_untied_decoder() {
    check_model("splade-xlm-roberta-untied");
}

#[test]
fn splade_modernbert_with_biases() {
    check_model("splade-modernbert-biases");
}

#[test]
fn dense_and_sparse_models_are_not_confused() {
    let sparse = tiny_model_dir("splade-bert-tied-max");
    let error = SentenceEncoder::load(&sparse, Device::default())
        .err()
        .expect("a SPLADE folder is not a dense model")
        .to_string();
    assert!(error.contains("SparseEncoder"), "{error}");
    let error = SparseEncoder::load(tiny_model_dir("bert-mean-normalize-old"), Device::default())
        .err()
        .expect("a dense folder is not a sparse model")
        .to_string();
    assert!(error.contains("SentenceEncoder"), "{error}");
    // A bare *ForMaskedLM folder is either, as in ST: mean pooling when loaded as dense.
    let dense = SentenceEncoder::load(
        tiny_model_dir("splade-distilbert-tied-bare"),
        Device::default(),
    )
    .unwrap();
    assert_eq!(dense.embedding_dimension(), 32);
}

#[test]
fn sparse_options_are_checked() {
    let encoder =
        SparseEncoder::load(tiny_model_dir("splade-bert-tied-max"), Device::default()).unwrap();
    for (options, expected) in [
        (
            EncodeOptions {
                max_active_dims: Some(0),
                ..options()
            },
            "max_active_dims must be at least 1",
        ),
        (
            EncodeOptions {
                truncate_dim: Some(8),
                ..options()
            },
            "apply to dense models",
        ),
    ] {
        let error = encoder.encode(&["text"], &options).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
    let dense = SentenceEncoder::load(tiny_model_dir("bert-mean-normalize-old"), Device::default())
        .unwrap();
    let error = dense
        .encode(
            &["text"],
            &EncodeOptions {
                max_active_dims: Some(4),
                ..options()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(error.contains("sparse models"), "{error}");
    // No texts: no rows, and ST's sparsity of nothing.
    let none = encoder.encode(&[] as &[&str], &options()).unwrap();
    assert_eq!(none.rows(), 0);
    assert_eq!(SparseEncoder::sparsity(&none).sparsity_ratio, 1.0);
}
