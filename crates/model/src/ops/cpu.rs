//! The CPU backend's (`flex`) encoder ops, on the raw f32 buffers: one GEMM per linear layer
//! with the bias added by the GEMM itself and the activation in one vectorised pass; the
//! residual add fused into layer norm; attention per text and head over that text's real
//! tokens, reading Q, K and V where the fused projection left them (no head transposes);
//! SPLADE's decode folded into each text's weights a tile at a time. Each op splits its work
//! over the threads of the rayon pool it is called in (`cpu:N`).

use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{AttentionInput, Heads, HiddenStates, Rotary, math};
use crate::Cpu;
use crate::architectures::TokenBatch;
use crate::config::Activation;
use crate::modules::{SpladeActivation, SpladeConfig, SpladeStrategy};

/// A linear layer's rows go through the GEMM in blocks of about this many, each block on one
/// thread: the gemm crate ran 10–20 % faster on 256–512-row blocks than on 8,192 rows at once
/// (this machine, MiniLM's shapes), and blocks split over threads without synchronisation
/// inside the GEMM.
const GEMM_ROW_BLOCK: usize = 256;
/// SPLADE decodes a tile of this many rows × vocabulary columns at a time (256 KB: folded
/// into the texts' weights while it is still in cache); each task owns a band of columns.
const SPLADE_TILE: [usize; 2] = [128, 512];
/// Rows per task of the row-wise kernels.
const ROWS_PER_TASK: usize = 16;
/// Attention computes the scores of this many queries at a time (per text and head).
const QUERY_BLOCK: usize = 128;

fn flex<const D: usize>(tensor: Tensor<Cpu, D>) -> FlexTensor {
    tensor.into_primitive().tensor()
}

/// A contiguous f32 view of `tensor` (copied only if it is not contiguous already).
fn contiguous(tensor: FlexTensor) -> FlexTensor {
    if tensor.as_slice::<f32>().is_some() {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

fn values(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("made contiguous")
}

/// A matrix as the GEMM reads it: its storage from its first element, its row stride and its
/// column stride (any layout: a transposed view is read in place).
fn strided(matrix: &FlexTensor) -> (&[f32], isize, isize) {
    let layout = matrix.layout();
    let storage: &[f32] = matrix.storage();
    (
        &storage[layout.start_offset()..],
        layout.strides()[0],
        layout.strides()[1],
    )
}

/// `out = x · w`, or `out += x · w` when `accumulate` (`out` holds a bias), on this thread:
/// `x` is `[rows, k]` and `out` `[rows, n]`, both row-major; `w` is `[k, n]`, read from its
/// first element with its row and column strides.
///
/// # Safety
/// `w`'s slice holds every element `(i, j)`, `i < k`, `j < n`, at `i·row_stride + j·col_stride`.
unsafe fn multiply_into(
    out: &mut [f32],
    x: &[f32],
    k: usize,
    (w, w_rs, w_cs): (&[f32], isize, isize),
    accumulate: bool,
) {
    let rows = x.len() / k;
    let n = out.len() / rows.max(1);
    debug_assert_eq!(out.len(), rows * n);
    // SAFETY: `x` and `out` are row-major [rows, k] and [rows, n] slices; `w` as the caller
    // promises.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            w_cs,
            w_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn bias_of(linear: &Linear<Cpu>) -> Option<FlexTensor> {
    linear
        .bias
        .as_ref()
        .map(|bias| contiguous(flex(bias.val())))
}

fn tensor(values: Vec<f32>, shape: [usize; 2]) -> Tensor<Cpu, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(FlexTensor::from_data(
        TensorData::new(values, shape),
    )))
}

/// `activation(x · W + b)`.
pub fn linear(
    x: Tensor<Cpu, 2>,
    linear: &Linear<Cpu>,
    activation: Option<Activation>,
) -> Tensor<Cpu, 2> {
    let x = contiguous(flex(x));
    let [m, k] = [x.layout().shape()[0], x.layout().shape()[1]];
    let weight = flex(linear.weight.val());
    let (w, w_rs, w_cs) = strided(&weight);
    let n = weight.layout().shape()[1];

    // The GEMM adds its product to rows that already hold the bias.
    let bias = bias_of(linear);
    let mut out = match &bias {
        Some(bias) => values(bias).repeat(m),
        None => vec![0f32; m * n],
    };
    let bias = bias.is_some();
    // Blocks of about GEMM_ROW_BLOCK rows, their count a multiple of the threads.
    let threads = rayon::current_num_threads();
    let blocks = m.div_ceil(GEMM_ROW_BLOCK).next_multiple_of(threads).max(1);
    let block_rows = m.div_ceil(blocks).max(1);
    let x = values(&x);
    out.par_chunks_mut(block_rows * n)
        .zip(x.par_chunks(block_rows * k))
        .for_each(|(out, x)| {
            // SAFETY: `w` is [k, n] with its own strides, all of it in the slice.
            unsafe { multiply_into(out, x, k, (w, w_rs, w_cs), bias) };
        });
    if let Some(activation) = activation {
        let kernel = activation_kernel(activation);
        out.par_chunks_mut(n * ROWS_PER_TASK).for_each(kernel);
    }
    tensor(out, [m, n])
}

/// `LayerNorm(x + residual)`.
pub fn add_layer_norm(
    x: Tensor<Cpu, 2>,
    residual: Tensor<Cpu, 2>,
    norm: &LayerNorm<Cpu>,
    epsilon: f64,
) -> Tensor<Cpu, 2> {
    let [rows, width] = x.dims();
    let (x, residual) = (contiguous(flex(x)), contiguous(flex(residual)));
    let gamma = contiguous(flex(norm.gamma.val()));
    let beta = match &norm.beta {
        Some(beta) => contiguous(flex(beta.val())),
        None => FlexTensor::from_data(TensorData::new(vec![0f32; width], [width])),
    };
    let (gamma, beta) = (values(&gamma), values(&beta));
    let mut out = vec![0f32; rows * width];
    out.par_chunks_mut(width * ROWS_PER_TASK)
        .zip(values(&x).par_chunks(width * ROWS_PER_TASK))
        .zip(values(&residual).par_chunks(width * ROWS_PER_TASK))
        .for_each(|((out, x), residual)| {
            for ((o, x), r) in out
                .chunks_mut(width)
                .zip(x.chunks(width))
                .zip(residual.chunks(width))
            {
                math::add_layer_norm(x, r, gamma, beta, epsilon as f32, o);
            }
        });
    tensor(out, [rows, width])
}

thread_local! {
    /// One query block's attention scores, reused: a fresh 256 KB buffer per task (256
    /// tokens) was an mmap, page faults and an munmap each time.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A raw pointer that rayon tasks may share: each task writes its own disjoint part.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` places in (a method, so closures capture the `Sync` wrapper and not
    /// the raw pointer inside it).
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY (of callers): `offset` lies inside the buffer this was made from.
        self.0.wrapping_add(offset)
    }
}

/// Per text and query head: softmax(scores + bias)·V over the text's own rows (the scores Q·Kᵀ
/// scaled and capped as [`Scores`](super::Scores) says), any layout,
/// with the keys and values of the head's group ([`Heads`]); with a window, each query over
/// the keys it sees only. Queries go in blocks of [`QUERY_BLOCK`], so a block's scores stay
/// small however long the text (8,192 tokens would be 256 MB at once), and a windowed block
/// (local or causal) multiplies only the keys its queries reach.
pub fn self_attention(
    qkv: Tensor<Cpu, 2>,
    heads: Heads,
    input: &AttentionInput<Cpu>,
) -> Tensor<Cpu, 2> {
    let [rows, width] = qkv.dims();
    let head_dim = heads.dim;
    let (queries_width, keys_width) = (heads.query_width(), heads.key_value_width());
    let scale = input.scores.scale(head_dim) as f32;
    let softcap = input.scores.softcap.map(|cap| cap as f32);
    let qkv = contiguous(flex(qkv));
    let qkv = values(&qkv);
    let bias = input.bias.clone().map(|b| contiguous(flex(b)));
    let bias = bias.as_ref().map(|b| (values(b), b.layout().shape()[2]));
    let layout = &input.rows;
    let window = input.window;

    let mut out = vec![0f32; rows * queries_width];
    let shared = SharedOut(out.as_mut_ptr());
    (0..layout.batch * heads.query)
        .into_par_iter()
        .for_each(|task| {
            let (text, head) = (task / heads.query, task % heads.query);
            let group = heads.key_value_of(head);
            let (start, len) = (layout.starts[text], layout.lengths[text]);
            for first in (0..len).step_by(QUERY_BLOCK) {
                let queries = first..(first + QUERY_BLOCK).min(len);
                let keys = match window {
                    Some(w) => w.keys(queries.start, len).start..w.keys(queries.end - 1, len).end,
                    None => 0..len,
                };
                let (m, n) = (queries.len(), keys.len());
                let q = &qkv[(start + queries.start) * width + head * head_dim..];
                let k = &qkv[(start + keys.start) * width + queries_width + group * head_dim..];
                let v = &qkv[(start + keys.start) * width
                    + queries_width
                    + keys_width
                    + group * head_dim..];
                SCORES.with_borrow_mut(|scores| {
                    scores.clear();
                    scores.resize(m * n, 0.0);
                    // SAFETY: Q is an [m, head_dim] block, K and V [n, head_dim] blocks, all
                    // with row stride `width` inside `qkv`; `scores` is [m, n]; this task's
                    // output block (its text's rows, its head's columns) is written by no
                    // other task.
                    unsafe {
                        // scores = scale · Q·Kᵀ (Kᵀ: element (d, j) at k[j·width + d]).
                        gemm::gemm(
                            m,
                            n,
                            head_dim,
                            scores.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            q.as_ptr(),
                            1,
                            width as isize,
                            k.as_ptr(),
                            width as isize,
                            1,
                            0.0,
                            scale,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                    for (i, row) in scores.chunks_mut(n).enumerate() {
                        let query = queries.start + i;
                        if let Some(cap) = softcap {
                            for s in row.iter_mut() {
                                *s = (*s / cap).tanh() * cap;
                            }
                        }
                        if let Some((bias, seq)) = bias {
                            let from = head * seq * seq + query * seq + keys.start;
                            for (s, b) in row.iter_mut().zip(&bias[from..from + n]) {
                                *s += b;
                            }
                        }
                        // The keys this query sees, within the block's keys.
                        let seen = match window {
                            Some(w) => {
                                let seen = w.keys(query, len);
                                seen.start - keys.start..seen.end - keys.start
                            }
                            None => 0..n,
                        };
                        row[..seen.start].fill(0.0);
                        row[seen.end..].fill(0.0);
                        let count = seen.len();
                        math::softmax_rows(&mut row[seen], count);
                    }
                    // SAFETY: as above; the output block is [m, head_dim] with row stride
                    // `queries_width`.
                    unsafe {
                        gemm::gemm(
                            m,
                            head_dim,
                            n,
                            shared.at((start + queries.start) * queries_width + head * head_dim),
                            1,
                            queries_width as isize,
                            false,
                            scores.as_ptr(),
                            1,
                            n as isize,
                            v.as_ptr(),
                            1,
                            width as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                });
            }
        });
    tensor(out, [rows, queries_width])
}

/// Rotary position embedding of the queries and keys, in place on a copy of `qkv`.
pub fn rotate_queries_keys(
    qkv: Tensor<Cpu, 2>,
    heads: Heads,
    rotary: &Rotary<Cpu>,
) -> Tensor<Cpu, 2> {
    let [rows, width] = qkv.dims();
    let half = heads.dim / 2;
    let rotated = heads.query_width() + heads.key_value_width();
    let mut out = values(&contiguous(flex(qkv))).to_vec();
    let (cos, sin) = (
        contiguous(flex(rotary.cos.clone())),
        contiguous(flex(rotary.sin.clone())),
    );
    let (cos, sin) = (values(&cos), values(&sin));
    out.par_chunks_mut(width * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, block)| {
            for (i, row) in block.chunks_mut(width).enumerate() {
                let r = task * ROWS_PER_TASK + i;
                let (cos, sin) = (
                    &cos[r * half..(r + 1) * half],
                    &sin[r * half..(r + 1) * half],
                );
                // Queries and keys, head by head.
                for head in row[..rotated].chunks_mut(2 * half) {
                    let (first, second) = head.split_at_mut(half);
                    for d in 0..half {
                        let (x1, x2) = (first[d], second[d]);
                        first[d] = x1 * cos[d] - x2 * sin[d];
                        second[d] = x2 * cos[d] + x1 * sin[d];
                    }
                }
            }
        });
    tensor(out, [rows, width])
}

/// `activation(input) ⊙ gate` for rows holding `[input | gate]`.
pub fn gated_activation(x: Tensor<Cpu, 2>, activation: Activation) -> Tensor<Cpu, 2> {
    let [rows, width] = x.dims();
    let half = width / 2;
    let x = contiguous(flex(x));
    let mut out = vec![0f32; rows * half];
    let kernel = activation_kernel(activation);
    out.par_chunks_mut(half * ROWS_PER_TASK)
        .zip(values(&x).par_chunks(width * ROWS_PER_TASK))
        .for_each(|(out, x)| {
            for (o, row) in out.chunks_mut(half).zip(x.chunks(width)) {
                o.copy_from_slice(&row[..half]);
                kernel(o);
                for (o, g) in o.iter_mut().zip(&row[half..]) {
                    *o *= g;
                }
            }
        });
    tensor(out, [rows, half])
}

/// The in-place kernel of an activation.
fn activation_kernel(activation: Activation) -> fn(&mut [f32]) {
    match activation {
        Activation::Gelu => math::gelu,
        Activation::GeluTanh => math::gelu_tanh,
        Activation::Relu => math::relu,
        Activation::Silu => math::silu,
    }
}

/// SPLADE's weights `[batch, vocab]` for the decoder's logits `x · W + b`: each task decodes a
/// band of vocabulary columns for every row, a tile at a time, and folds each tile into its
/// texts' weights at once, so no text's `[tokens, vocab]` logits ever exist. Max pooling keeps
/// the largest logit and activates it once at the end (`log1p ∘ relu` is non-decreasing, so
/// that is the largest activated value); sum pooling activates each positive logit (the others
/// add 0).
pub fn splade_pool(
    hidden: HiddenStates<Cpu>,
    decoder: &Linear<Cpu>,
    pooling: SpladeConfig,
    batch: &TokenBatch,
) -> Tensor<Cpu, 2> {
    let texts = hidden.rows.batch;
    let row_texts = hidden.rows.texts_of_rows(&batch.mask);
    let x = contiguous(flex(hidden.x));
    let [m, k] = [x.layout().shape()[0], x.layout().shape()[1]];
    let x = values(&x);
    let weight = flex(decoder.weight.val());
    let (w, w_rs, w_cs) = strided(&weight);
    let vocab = weight.layout().shape()[1];
    let bias = bias_of(decoder);
    let bias = bias.as_ref().map(values);
    let activate = |logit: f32| match pooling.activation {
        SpladeActivation::Relu => logit.max(0.0).ln_1p(),
        SpladeActivation::Log1pRelu => logit.max(0.0).ln_1p().ln_1p(),
    };
    let [tile_rows, band] = SPLADE_TILE;

    let mut out = vec![0f32; texts * vocab];
    let shared = SharedOut(out.as_mut_ptr());
    (0..vocab.div_ceil(band)).into_par_iter().for_each(|b| {
        let first = b * band;
        let width = band.min(vocab - first);
        let initial = match pooling.strategy {
            SpladeStrategy::Max => f32::NEG_INFINITY,
            SpladeStrategy::Sum => 0.0,
        };
        let mut weights = vec![initial; texts * width];
        let mut tile = vec![0f32; tile_rows * width];
        for r0 in (0..m).step_by(tile_rows) {
            let rows = tile_rows.min(m - r0);
            let owners = &row_texts[r0..r0 + rows];
            if owners.iter().all(Option::is_none) {
                continue;
            }
            let tile = &mut tile[..rows * width];
            if let Some(bias) = bias {
                for row in tile.chunks_mut(width) {
                    row.copy_from_slice(&bias[first..first + width]);
                }
            }
            // SAFETY: the band's columns of `w` start `first` columns in, with `w`'s strides;
            // all of them are in the slice.
            let band_w = (&w[first * w_cs as usize..], w_rs, w_cs);
            let x = &x[r0 * k..(r0 + rows) * k];
            unsafe { multiply_into(tile, x, k, band_w, bias.is_some()) };
            for (logits, owner) in tile.chunks(width).zip(owners) {
                let Some(text) = *owner else { continue };
                let weights = &mut weights[text * width..(text + 1) * width];
                match pooling.strategy {
                    SpladeStrategy::Max => {
                        for (w, &l) in weights.iter_mut().zip(logits) {
                            *w = w.max(l);
                        }
                    }
                    SpladeStrategy::Sum => {
                        for (w, &l) in weights.iter_mut().zip(logits) {
                            if l > 0.0 {
                                *w += activate(l);
                            }
                        }
                    }
                }
            }
        }
        for (text, weights) in weights.chunks(width).enumerate() {
            for (j, &w) in weights.iter().enumerate() {
                let value = match pooling.strategy {
                    SpladeStrategy::Max => activate(w),
                    SpladeStrategy::Sum => w,
                };
                // SAFETY: (text, first + j) lies in `out`, in this task's band of columns.
                unsafe { *shared.at(text * vocab + first + j) = value };
            }
        }
    });
    tensor(out, [texts, vocab])
}
