//! The GPU paths against sentence-transformers' references: every tiny model and
//! all-MiniLM-L6-v2 in f32 (half precision is checked through pool workers in the pool's tests,
//! since burn allows one float type per device and process).
//!
//! They run on `$POOL_ENCODE_GPU_TEST_DEVICE` (`cuda:0`, `wgpu:0`: a build with that feature).
//! Unset, each test says it was skipped and passes; CI sets it to `wgpu:0` on Mesa's lavapipe
//! and the H100 checks to `cuda:0`, where a missing device fails instead.

use pool_encode_encoder::{Device, Embeddings, EncodeOptions, Precision, SentenceEncoder};
use pool_encode_tests::*;

fn gpu_device(test: &str) -> Option<Device> {
    match std::env::var("POOL_ENCODE_GPU_TEST_DEVICE") {
        Ok(d) if !d.is_empty() => Some(d.parse().expect("POOL_ENCODE_GPU_TEST_DEVICE")),
        _ => {
            eprintln!("{test}: skipped (POOL_ENCODE_GPU_TEST_DEVICE is not set)");
            None
        }
    }
}

/// Batches of 32 texts and no token budget, as a user leaves them: the attention scores of 32
/// texts of 1,024 tokens (`llama-mean-biases-new`'s longest) in 4 heads take 512 MiB, more than
/// lavapipe allocates at once, so the attention goes in blocks of queries that fit the device's
/// largest buffer.
fn options() -> EncodeOptions {
    EncodeOptions {
        batch_size: 32,
        ..Default::default()
    }
}

/// The first `n` reference rows.
fn first_rows(all: &Embeddings, n: usize) -> Embeddings {
    Embeddings::new(all.as_slice()[..n * all.dim()].to_vec(), n, all.dim())
}

/// Texts for all-MiniLM-L6-v2 on a slow device (lavapipe runs ~1.5 GFLOP/s): a handful of the
/// reference texts, long ones included, unless `$POOL_ENCODE_GPU_TEST_ALL` asks for all 211.
fn minilm_count(all: usize) -> usize {
    if std::env::var_os("POOL_ENCODE_GPU_TEST_ALL").is_some() {
        all
    } else {
        12
    }
}

#[test]
fn f32_matches_sentence_transformers() {
    let Some(device) = gpu_device("f32_matches_sentence_transformers") else {
        return;
    };
    let texts = texts();
    for name in TINY_MODELS {
        let encoder = SentenceEncoder::load(tiny_model_dir(name), device).unwrap();
        let expected = reference(name, "embeddings.npy");
        let (min_cosine, max_abs) = f32_bounds(device, &expected);
        let (cos, diff) = assert_close_within(
            &format!("{name} on {device}"),
            &encoder.encode(&texts, &options()).unwrap(),
            &expected,
            min_cosine,
            max_abs,
        );
        eprintln!("{name} on {device}: worst cosine {cos:.8}, max |diff| {diff:.2e}");
        // Token embeddings go through the same backend path without pooling (a StaticEmbedding
        // model has none).
        if encoder.folder().transformer().is_err() {
            continue;
        }
        let tokens = encoder.encode_tokens(&texts[..3], &options()).unwrap();
        let cpu = SentenceEncoder::load(tiny_model_dir(name), Device::default()).unwrap();
        for (gpu_rows, cpu_rows) in tokens
            .iter()
            .zip(cpu.encode_tokens(&texts[..3], &options()).unwrap())
        {
            let (min_cosine, max_abs) = f32_bounds(device, &cpu_rows);
            assert_close_within(
                &format!("{name} token embeddings on {device} vs cpu"),
                gpu_rows,
                &cpu_rows,
                min_cosine,
                max_abs,
            );
        }
    }
    // Batches in flight at once (one host thread and device stream each) give the same rows
    // as one batch at a time; small batches make many of them.
    let mut encoder = SentenceEncoder::load(tiny_model_dir(TINY_MODELS[0]), device).unwrap();
    let small = EncodeOptions {
        batch_size: 4,
        ..options()
    };
    encoder.set_concurrent_batches(1).unwrap();
    let one_at_a_time = encoder.encode(&texts, &small).unwrap();
    for batches in [2, 4] {
        encoder.set_concurrent_batches(batches).unwrap();
        let (cos, diff) = assert_close_within(
            &format!(
                "{} on {device}, {batches} batches in flight",
                TINY_MODELS[0]
            ),
            &encoder.encode(&texts, &small).unwrap(),
            &one_at_a_time,
            0.9999999,
            1e-6,
        );
        eprintln!("{batches} batches in flight vs 1: worst cosine {cos:.8}, max |diff| {diff:.2e}");
    }
    let n = minilm_count(texts.len());
    let encoder = SentenceEncoder::load(minilm_dir(), device).unwrap();
    let expected = first_rows(&reference("all-MiniLM-L6-v2", "embeddings.npy"), n);
    let (min_cosine, max_abs) = f32_bounds(device, &expected);
    let (cos, diff) = assert_close_within(
        &format!("all-MiniLM-L6-v2 on {device}"),
        &encoder.encode(&texts[..n], &options()).unwrap(),
        &expected,
        min_cosine,
        max_abs,
    );
    eprintln!(
        "all-MiniLM-L6-v2 on {device}, {n} texts: worst cosine {cos:.8}, max |diff| {diff:.2e}"
    );
    // One text per batch: other shapes, same rows.
    assert_close_within(
        &format!("all-MiniLM-L6-v2 on {device}, batch size 1"),
        &encoder
            .encode(
                &texts[..4],
                &EncodeOptions {
                    batch_size: 1,
                    ..options()
                },
            )
            .unwrap(),
        &first_rows(&expected, 4),
        min_cosine,
        max_abs,
    );
}

/// A second precision on a device this process already uses is refused (burn keeps one float
/// type per device and process): half precision runs in pool workers, see the pool's tests.
#[test]
fn a_second_precision_in_one_process_is_refused() {
    let Some(device) = gpu_device("a_second_precision_in_one_process_is_refused") else {
        return;
    };
    let _f32 = SentenceEncoder::load(tiny_model_dir(TINY_MODELS[0]), device).unwrap();
    let error = SentenceEncoder::load_with_precision(
        tiny_model_dir(TINY_MODELS[0]),
        device,
        Precision::F16,
    )
    .err()
    .expect("f16 after f32 on one device");
    assert!(
        error.to_string().contains("one float type per device"),
        "{error}"
    );
    assert!(
        SentenceEncoder::load_with_precision(minilm_dir(), Device::default(), Precision::F16)
            .is_err(),
        "the CPU backend is f32 only and must say so"
    );
}

#[test]
fn a_missing_device_is_an_error_not_a_panic() {
    let Some(device) = gpu_device("a_missing_device_is_an_error_not_a_panic") else {
        return;
    };
    let missing = match device {
        Device::Cuda(_) => Device::Cuda(999),
        _ => Device::Wgpu(999),
    };
    let error = SentenceEncoder::load(tiny_model_dir(TINY_MODELS[0]), missing)
        .err()
        .expect("device 999 does not exist");
    assert!(
        error.to_string().contains("does not exist"),
        "unclear error: {error}"
    );
}

/// SPLADE on the GPU: every tiny sparse model against ST's `SparseEncoder` (MLM head, the
/// sliced pooling's max / sum, log1p_relu, the inference-free router's document route).
#[test]
fn sparse_models_match_sentence_transformers() {
    let Some(device) = gpu_device("sparse_models_match_sentence_transformers") else {
        return;
    };
    let texts = texts();
    for name in SPARSE_MODELS {
        let encoder =
            pool_encode_encoder::SparseEncoder::load(tiny_model_dir(name), device).unwrap();
        let dim = encoder.embedding_dimension();
        let expected = read_sparse_jsonl(&reference_dir(name).join("encode.jsonl"), dim);
        let worst = assert_sparse_close(
            &format!("{name} on {device}"),
            &encoder.encode(&texts, &options()).unwrap(),
            &expected,
            sparse_bound(device, &expected),
        );
        eprintln!("{name} on {device}: max |diff| {worst:e}");
    }
}
