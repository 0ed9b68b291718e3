//! Sparse rows in CSR form: what a SPLADE encoder returns. A row holds only its active
//! vocabulary entries (ascending ids and their weights), so `[N, vocab]` is never dense.

use crate::{Embeddings, SimilarityFn};

/// One row's active entries: `indices` strictly ascending, `values` beside them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseRow<'a> {
    pub indices: &'a [u32],
    pub values: &'a [f32],
}

impl SparseRow<'_> {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn dot(&self, other: &SparseRow<'_>) -> f32 {
        let (mut i, mut j, mut sum) = (0, 0, 0f32);
        while i < self.len() && j < other.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    sum += self.values[i] * other.values[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        sum
    }

    /// Sum over the union of both rows' entries of `f(a, b)` (0 where a row has none).
    fn merged(&self, other: &SparseRow<'_>, f: impl Fn(f32, f32) -> f32) -> f32 {
        let (mut i, mut j, mut sum) = (0, 0, 0f32);
        while i < self.len() || j < other.len() {
            let a = self.indices.get(i).copied().unwrap_or(u32::MAX);
            let b = other.indices.get(j).copied().unwrap_or(u32::MAX);
            if a < b {
                sum += f(self.values[i], 0.0);
                i += 1;
            } else if b < a {
                sum += f(0.0, other.values[j]);
                j += 1;
            } else {
                sum += f(self.values[i], other.values[j]);
                i += 1;
                j += 1;
            }
        }
        sum
    }

    fn norm(&self) -> f32 {
        self.values.iter().map(|v| v * v).sum::<f32>().sqrt()
    }

    /// ST's similarity functions on sparse rows (the same values as on the dense rows).
    pub fn score(&self, other: &SparseRow<'_>, function: SimilarityFn) -> f32 {
        match function {
            SimilarityFn::Dot => self.dot(other),
            SimilarityFn::Cosine => {
                self.dot(other) / (self.norm().max(1e-12) * other.norm().max(1e-12))
            }
            SimilarityFn::Euclidean => -self.merged(other, |a, b| (a - b) * (a - b)).sqrt(),
            SimilarityFn::Manhattan => -self.merged(other, |a, b| (a - b).abs()),
        }
    }
}

/// ST's `sparsity()`: mean active dimensions per row and the mean fraction of zeros.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sparsity {
    pub active_dims: f64,
    pub sparsity_ratio: f64,
}

/// Rows of sparse vectors of width `dim`, in CSR form.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseEmbeddings {
    dim: usize,
    /// Row `r`'s entries are `indptr[r]..indptr[r + 1]`.
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl SparseEmbeddings {
    /// No rows yet, each `dim` wide.
    pub fn new(dim: usize) -> Self {
        SparseEmbeddings {
            dim,
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Appends a row; `indices` must be strictly ascending and below `dim`.
    pub fn push(&mut self, indices: &[u32], values: &[f32]) {
        assert_eq!(indices.len(), values.len(), "one value per index");
        debug_assert!(indices.windows(2).all(|w| w[0] < w[1]), "ascending indices");
        debug_assert!(
            indices.iter().all(|&i| (i as usize) < self.dim),
            "index < dim"
        );
        self.indices.extend_from_slice(indices);
        self.values.extend_from_slice(values);
        self.indptr.push(self.indices.len());
    }

    /// Appends a dense row's non-zero entries, keeping only the `max_active_dims` largest in
    /// absolute value when set (ST's `select_max_active_dims`).
    pub fn push_dense(&mut self, row: &[f32], max_active_dims: Option<usize>) {
        assert_eq!(row.len(), self.dim, "dense row width");
        let start = self.indices.len();
        for (i, &v) in row.iter().enumerate() {
            if v != 0.0 {
                self.indices.push(i as u32);
                self.values.push(v);
            }
        }
        if let Some(k) = max_active_dims
            && self.indices.len() - start > k
        {
            let mut entries: Vec<(u32, f32)> = self.indices[start..]
                .iter()
                .copied()
                .zip(self.values[start..].iter().copied())
                .collect();
            // Largest first; equal values keep the lower index (deterministic).
            entries.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
            entries.truncate(k);
            entries.sort_by_key(|e| e.0);
            self.indices.truncate(start);
            self.values.truncate(start);
            for (i, v) in entries {
                self.indices.push(i);
                self.values.push(v);
            }
        }
        self.indptr.push(self.indices.len());
    }

    /// Appends every row of `other` (same width).
    pub fn extend(&mut self, other: &SparseEmbeddings) {
        assert_eq!(self.dim, other.dim, "sparse widths differ");
        for row in other.iter() {
            self.push(row.indices, row.values);
        }
    }

    /// Builds rows from raw CSR parts, checking them (what a result read from elsewhere needs).
    pub fn from_parts(
        dim: usize,
        indptr: Vec<usize>,
        indices: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<Self, String> {
        if indptr.first() != Some(&0)
            || indptr.last() != Some(&indices.len())
            || indices.len() != values.len()
            || indptr.windows(2).any(|w| w[0] > w[1])
        {
            return Err("inconsistent CSR offsets".into());
        }
        for w in indptr.windows(2) {
            let row = &indices[w[0]..w[1]];
            if row.windows(2).any(|p| p[0] >= p[1]) || row.iter().any(|&i| i as usize >= dim) {
                return Err(format!("row indices not ascending or not below {dim}"));
            }
        }
        Ok(SparseEmbeddings {
            dim,
            indptr,
            indices,
            values,
        })
    }

    pub fn rows(&self) -> usize {
        self.indptr.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    /// Width of every row (the vocabulary size).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Active entries over all rows.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    pub fn row(&self, r: usize) -> SparseRow<'_> {
        let range = self.indptr[r]..self.indptr[r + 1];
        SparseRow {
            indices: &self.indices[range.clone()],
            values: &self.values[range],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = SparseRow<'_>> {
        (0..self.rows()).map(|r| self.row(r))
    }

    /// The CSR arrays: row offsets, column indices, values.
    pub fn parts(&self) -> (&[usize], &[u32], &[f32]) {
        (&self.indptr, &self.indices, &self.values)
    }

    /// Dense `[rows, dim]` (meant for small inputs: it materialises every zero).
    pub fn to_dense(&self) -> Embeddings {
        let mut data = vec![0f32; self.rows() * self.dim];
        for (r, row) in self.iter().enumerate() {
            for (&i, &v) in row.indices.iter().zip(row.values) {
                data[r * self.dim + i as usize] = v;
            }
        }
        Embeddings::new(data, self.rows(), self.dim)
    }

    /// ST's `sparsity()`; no rows gives 0 active dimensions and a ratio of 1.
    pub fn sparsity(&self) -> Sparsity {
        if self.is_empty() || self.dim == 0 {
            return Sparsity {
                active_dims: 0.0,
                sparsity_ratio: 1.0,
            };
        }
        let active_dims = self.nnz() as f64 / self.rows() as f64;
        Sparsity {
            active_dims,
            sparsity_ratio: 1.0 - active_dims / self.dim as f64,
        }
    }

    /// `[self.rows(), other.rows()]` scores.
    pub fn similarity(&self, other: &SparseEmbeddings, function: SimilarityFn) -> Embeddings {
        let mut data = Vec::with_capacity(self.rows() * other.rows());
        for a in self.iter() {
            data.extend(other.iter().map(|b| a.score(&b, function)));
        }
        Embeddings::new(data, self.rows(), other.rows())
    }

    /// The score of each row with the same row of `other`.
    pub fn similarity_pairwise(
        &self,
        other: &SparseEmbeddings,
        function: SimilarityFn,
    ) -> Vec<f32> {
        self.iter()
            .zip(other.iter())
            .map(|(a, b)| a.score(&b, function))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> SparseEmbeddings {
        let mut s = SparseEmbeddings::new(6);
        s.push_dense(&[0.0, 2.0, 0.0, -3.0, 1.0, 0.0], None);
        s.push_dense(&[1.0, 0.0, 0.0, 4.0, 0.0, 0.5], Some(2));
        s.push_dense(&[0.0; 6], Some(2));
        s
    }

    #[test]
    fn max_active_dims_keeps_the_largest_magnitudes_in_index_order() {
        let s = rows();
        assert_eq!(s.row(0).indices, &[1, 3, 4]);
        assert_eq!(s.row(1).indices, &[0, 3]);
        assert_eq!(s.row(1).values, &[1.0, 4.0]);
        assert!(s.row(2).is_empty());
        let sparsity = s.sparsity();
        assert_eq!(sparsity.active_dims, 5.0 / 3.0);
        assert!((sparsity.sparsity_ratio - (1.0 - 5.0 / 18.0)).abs() < 1e-12);
    }

    #[test]
    fn sparse_scores_equal_the_dense_ones() {
        let s = rows();
        let dense = s.to_dense();
        for function in [
            SimilarityFn::Dot,
            SimilarityFn::Cosine,
            SimilarityFn::Euclidean,
            SimilarityFn::Manhattan,
        ] {
            let sparse = s.similarity(&s, function);
            let expected = function.matrix(&dense, &dense);
            for (a, b) in sparse.as_slice().iter().zip(expected.as_slice()) {
                assert!((a - b).abs() < 1e-6, "{function:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn malformed_parts_are_refused() {
        assert!(SparseEmbeddings::from_parts(4, vec![0, 2], vec![3, 1], vec![1.0, 2.0]).is_err());
        assert!(SparseEmbeddings::from_parts(4, vec![0, 1], vec![4], vec![1.0]).is_err());
        assert!(SparseEmbeddings::from_parts(4, vec![0, 3], vec![1], vec![1.0]).is_err());
        let ok = SparseEmbeddings::from_parts(4, vec![0, 1, 1], vec![2], vec![1.5]).unwrap();
        assert_eq!(ok.rows(), 2);
    }
}
