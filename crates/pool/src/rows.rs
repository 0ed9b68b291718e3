//! The two kinds of result rows a pool returns, dense ([`Embeddings`]) and sparse
//! ([`SparseEmbeddings`]), behind one trait so that streaming, ordering and windowing are
//! written once; and their byte layout in a worker's shared-memory slot.

use pool_encode_encoder::{Embeddings, SparseEmbeddings};

use crate::PoolError;

/// A worker's result for one chunk, as the dispatcher reads it from the slot.
#[derive(Debug)]
#[doc(hidden)]
pub enum WorkerRows {
    Dense(Embeddings),
    Sparse(SparseEmbeddings),
}

/// Rows of a call's result: what the streams assemble, reorder and yield.
pub trait Rows: Sized + Send + 'static {
    /// No rows, `dim` wide.
    fn empty(dim: usize) -> Self;
    fn rows(&self) -> usize;
    fn dim(&self) -> usize;
    /// Appends `other`'s rows.
    fn append(&mut self, other: Self);
    /// Removes and returns the first `n` rows.
    fn take_front(&mut self, n: usize) -> Self;
    /// Row `k` moves to row `order[k]` (`order` is a permutation of `0..rows`).
    fn unsort(self, order: &[usize]) -> Self;
    /// The row that stands for a skipped text: NaN for dense rows, no entries for sparse ones.
    fn skipped_row(dim: usize) -> Self;
    #[doc(hidden)]
    fn from_worker(rows: WorkerRows) -> Result<Self, PoolError>;
}

fn wrong_kind(wanted: &str, got: &str) -> PoolError {
    PoolError::InvalidOption(format!(
        "the pool's model gives {got} rows; call the {got} methods (encode{}) instead of the {wanted} ones",
        if got == "sparse" { "_sparse" } else { "" }
    ))
}

impl Rows for Embeddings {
    fn empty(dim: usize) -> Self {
        Embeddings::new(Vec::new(), 0, dim)
    }
    fn rows(&self) -> usize {
        Embeddings::rows(self)
    }
    fn dim(&self) -> usize {
        Embeddings::dim(self)
    }
    fn append(&mut self, other: Self) {
        let (dim, rows) = (other.dim(), Embeddings::rows(self) + other.rows());
        let mut data = std::mem::take(self).into_vec();
        data.extend_from_slice(other.as_slice());
        *self = Embeddings::new(data, rows, dim);
    }
    fn take_front(&mut self, n: usize) -> Self {
        let (dim, rows) = (Embeddings::dim(self), Embeddings::rows(self));
        let mut front = std::mem::take(self).into_vec();
        let rest = front.split_off(n * dim);
        *self = Embeddings::new(rest, rows - n, dim);
        Embeddings::new(front, n, dim)
    }
    fn unsort(self, order: &[usize]) -> Self {
        let (dim, rows) = (Embeddings::dim(&self), Embeddings::rows(&self));
        let mut values = vec![0f32; rows * dim];
        for (k, row) in self.iter().enumerate() {
            values[order[k] * dim..(order[k] + 1) * dim].copy_from_slice(row);
        }
        Embeddings::new(values, rows, dim)
    }
    fn skipped_row(dim: usize) -> Self {
        Embeddings::new(vec![f32::NAN; dim], 1, dim)
    }
    fn from_worker(rows: WorkerRows) -> Result<Self, PoolError> {
        match rows {
            WorkerRows::Dense(rows) => Ok(rows),
            WorkerRows::Sparse(_) => Err(wrong_kind("dense", "sparse")),
        }
    }
}

impl Rows for SparseEmbeddings {
    fn empty(dim: usize) -> Self {
        SparseEmbeddings::new(dim)
    }
    fn rows(&self) -> usize {
        SparseEmbeddings::rows(self)
    }
    fn dim(&self) -> usize {
        SparseEmbeddings::dim(self)
    }
    fn append(&mut self, other: Self) {
        self.extend(&other);
    }
    fn take_front(&mut self, n: usize) -> Self {
        let mut front = SparseEmbeddings::new(self.dim());
        let mut rest = SparseEmbeddings::new(self.dim());
        for (r, row) in self.iter().enumerate() {
            let target = if r < n { &mut front } else { &mut rest };
            target.push(row.indices, row.values);
        }
        *self = rest;
        front
    }
    fn unsort(self, order: &[usize]) -> Self {
        let mut inverse = vec![0; order.len()];
        for (k, &o) in order.iter().enumerate() {
            inverse[o] = k;
        }
        let mut out = SparseEmbeddings::new(self.dim());
        for &k in &inverse {
            let row = self.row(k);
            out.push(row.indices, row.values);
        }
        out
    }
    fn skipped_row(dim: usize) -> Self {
        let mut row = SparseEmbeddings::new(dim);
        row.push(&[], &[]);
        row
    }
    fn from_worker(rows: WorkerRows) -> Result<Self, PoolError> {
        match rows {
            WorkerRows::Sparse(rows) => Ok(rows),
            WorkerRows::Dense(_) => Err(wrong_kind("sparse", "dense")),
        }
    }
}

/// How a result lies in a slot: dense rows as `rows × dim` f32; sparse rows as CSR, `rows + 1`
/// u64 offsets, then `nnz` u32 indices, then `nnz` f32 values. All little-endian.
pub(crate) fn encode_slot(rows: &WorkerRows) -> Vec<u8> {
    match rows {
        WorkerRows::Dense(e) => e.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect(),
        WorkerRows::Sparse(s) => {
            let (indptr, indices, values) = s.parts();
            let mut bytes = Vec::with_capacity(indptr.len() * 8 + indices.len() * 8);
            bytes.extend(indptr.iter().flat_map(|&p| (p as u64).to_le_bytes()));
            bytes.extend(indices.iter().flat_map(|i| i.to_le_bytes()));
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            bytes
        }
    }
}

/// Reads back what [`encode_slot`] wrote; `nnz` is `None` for dense rows.
pub(crate) fn decode_slot(
    bytes: &[u8],
    rows: usize,
    dim: usize,
    nnz: Option<usize>,
) -> Result<WorkerRows, String> {
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let too_small = || "a result larger than its slot".to_string();
    match nnz {
        None => {
            let bytes = bytes.get(..rows * dim * 4).ok_or_else(too_small)?;
            Ok(WorkerRows::Dense(Embeddings::new(f32s(bytes), rows, dim)))
        }
        Some(nnz) => {
            let (a, b) = ((rows + 1) * 8, nnz * 4);
            let bytes = bytes.get(..a + 2 * b).ok_or_else(too_small)?;
            let indptr = bytes[..a]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
                .collect();
            let indices = bytes[a..a + b]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let values = f32s(&bytes[a + b..]);
            SparseEmbeddings::from_parts(dim, indptr, indices, values).map(WorkerRows::Sparse)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse() -> SparseEmbeddings {
        let mut s = SparseEmbeddings::new(5);
        s.push(&[1, 4], &[0.5, 2.0]);
        s.push(&[], &[]);
        s.push(&[0], &[3.0]);
        s
    }

    #[test]
    fn slots_round_trip_both_kinds() {
        let dense = Embeddings::new(vec![1.0, 2.0, 3.0, 4.0], 2, 2);
        let bytes = encode_slot(&WorkerRows::Dense(dense.clone()));
        match decode_slot(&bytes, 2, 2, None).unwrap() {
            WorkerRows::Dense(back) => assert_eq!(back, dense),
            other => panic!("{other:?}"),
        }
        let bytes = encode_slot(&WorkerRows::Sparse(sparse()));
        match decode_slot(&bytes, 3, 5, Some(3)).unwrap() {
            WorkerRows::Sparse(back) => assert_eq!(back, sparse()),
            other => panic!("{other:?}"),
        }
        assert!(decode_slot(&bytes[..10], 3, 5, Some(3)).is_err());
    }

    #[test]
    fn sparse_rows_split_append_and_unsort() {
        let mut s = sparse();
        let front = s.take_front(1);
        assert_eq!((front.rows(), s.rows()), (1, 2));
        let mut all = front;
        all.append(s);
        assert_eq!(all, sparse());
        // Row 0 → 2, 1 → 0, 2 → 1.
        let moved = sparse().unsort(&[2, 0, 1]);
        assert_eq!(moved.row(2), sparse().row(0));
        assert_eq!(moved.row(0), sparse().row(1));
        let dense = Embeddings::new(vec![1.0, 2.0, 3.0], 3, 1).unsort(&[2, 0, 1]);
        assert_eq!(dense.as_slice(), &[2.0, 3.0, 1.0]);
    }
}
