//! A row-major f32 matrix: what `encode` returns, one row per input text.

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    data: Vec<f32>,
    rows: usize,
    dim: usize,
}

impl Embeddings {
    /// `data.len()` must be `rows * dim`.
    pub fn new(data: Vec<f32>, rows: usize, dim: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * dim,
            "Embeddings: {rows}×{dim} needs {} values",
            rows * dim
        );
        Embeddings { data, rows, dim }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        // `max(1)`: chunks_exact(0) panics; a 0-dim matrix has no values to iterate anyway.
        self.data.chunks_exact(self.dim.max(1)).take(self.rows)
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// ST's `truncate_dim`: keep the first `dim` columns (Matryoshka models).
    pub fn truncate_dim(&mut self, dim: usize) {
        if dim >= self.dim {
            return;
        }
        let mut data = Vec::with_capacity(self.rows * dim);
        for row in self.iter() {
            data.extend_from_slice(&row[..dim]);
        }
        self.data = data;
        self.dim = dim;
    }

    /// ST's `normalize_embeddings=True`: each row divided by its L2 norm (floored at 1e-12).
    pub fn normalize(&mut self) {
        let dim = self.dim.max(1);
        for row in self.data.chunks_exact_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
}
