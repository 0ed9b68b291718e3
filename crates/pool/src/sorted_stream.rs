//! A stream encoded in windows sorted by length: what `Pool::encode` does for a whole input,
//! with bounded memory for an input of any size.
//!
//! The input is cut into windows of `window` texts; each window is sorted longest first, cut
//! into chunks, and fed, window after window, into one [`EncodeStream`] (so the pool never
//! drains between windows); the rows of a window are put back in input order once its last row
//! has arrived, and the window is yielded whole. Chunks then hold texts of similar length and
//! pad little.
//!
//! A full window is cut into chunks of `chunk_size`. The last window, shorter, is cut into as
//! many chunks as a full one (none smaller than a batch), so that the end of the input is spread
//! over the workers instead of left to one or two of them. The cut depends only on the window,
//! the chunk size and the batch size, so a resumed run (which keeps all three) cuts the same
//! chunks.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use pool_encode_encoder::Embeddings;

use crate::chunks::{cut_evenly, window_chunks};
use crate::{EncodeStream, Encoded, PoolError, Rows};

/// The input side: reads a window, sorts it, records its order, hands out its chunks.
pub(crate) struct SortedWindows<I> {
    texts: I,
    /// A whole number of chunks.
    window: usize,
    chunk_size: usize,
    batch_size: usize,
    pending: VecDeque<Vec<String>>,
    /// Each window's order (sorted position → position in the window), oldest first.
    orders: Rc<RefCell<VecDeque<Vec<usize>>>>,
}

impl<I: Iterator<Item = String>> Iterator for SortedWindows<I> {
    type Item = Vec<String>;

    fn next(&mut self) -> Option<Vec<String>> {
        if let Some(chunk) = self.pending.pop_front() {
            return Some(chunk);
        }
        let mut texts: Vec<String> = self.texts.by_ref().take(self.window).collect();
        if texts.is_empty() {
            return None;
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let sorted: Vec<String> = order
            .iter()
            .map(|&i| std::mem::take(&mut texts[i]))
            .collect();
        let chunks = window_chunks(sorted.len(), self.window, self.chunk_size, self.batch_size);
        self.orders.borrow_mut().push_back(order);
        self.pending = cut_evenly(sorted, chunks).collect();
        self.pending.pop_front()
    }
}

/// The output side: whole windows, in input order.
pub struct SortedEncodeStream<'p, I: Iterator<Item = String>, R: Rows = Embeddings> {
    inner: EncodeStream<'p, SortedWindows<I>, R>,
    orders: Rc<RefCell<VecDeque<Vec<usize>>>>,
    /// Rows of the current window so far, in sorted order, and the skipped among them.
    rows: R,
    filled: usize,
    skipped: Vec<usize>,
    /// Input row where the current window starts.
    window_start: usize,
    done: bool,
}

impl<'p, I: Iterator<Item = String>, R: Rows> SortedEncodeStream<'p, I, R> {
    /// `window` is rounded up to a whole number of `chunk_size` chunks, so that a full window
    /// is cut into chunks of `chunk_size`.
    pub(crate) fn new(
        texts: I,
        window: usize,
        (chunk_size, batch_size): (usize, usize),
        dim: usize,
        start: impl FnOnce(SortedWindows<I>) -> EncodeStream<'p, SortedWindows<I>, R>,
    ) -> Self {
        let orders = Rc::new(RefCell::new(VecDeque::new()));
        let chunk_size = chunk_size.max(1);
        let windows = SortedWindows {
            texts,
            window: window.max(1).next_multiple_of(chunk_size),
            chunk_size,
            batch_size: batch_size.max(1),
            pending: VecDeque::new(),
            orders: orders.clone(),
        };
        SortedEncodeStream {
            inner: start(windows),
            orders,
            rows: R::empty(dim),
            filled: 0,
            skipped: Vec::new(),
            window_start: 0,
            done: false,
        }
    }

    /// The current window once all its rows are in, in input order. Rows and skipped indices
    /// past it (a piece may span windows) stay for the next window.
    fn take_window(&mut self) -> Option<Encoded<R>> {
        let len = self.orders.borrow().front()?.len();
        if self.filled < len {
            return None;
        }
        let order = self.orders.borrow_mut().pop_front()?;
        let window_rows = self.rows.take_front(len).unsort(&order);
        let (mine, later): (Vec<usize>, Vec<usize>) =
            self.skipped.drain(..).partition(|&s| s < len);
        self.skipped = later.into_iter().map(|s| s - len).collect();
        let mut skipped: Vec<usize> = mine
            .into_iter()
            .map(|s| self.window_start + order[s])
            .collect();
        skipped.sort_unstable();
        let piece = Encoded {
            offset: self.window_start,
            embeddings: window_rows,
            skipped,
        };
        self.window_start += len;
        self.filled -= len;
        Some(piece)
    }

    /// Maps a stream row to its input row.
    fn input_row(&self, stream_row: usize) -> usize {
        let orders = self.orders.borrow();
        let mut start = self.window_start;
        let mut row = stream_row - self.window_start;
        for order in orders.iter() {
            if row < order.len() {
                return start + order[row];
            }
            row -= order.len();
            start += order.len();
        }
        stream_row
    }
}

impl<I: Iterator<Item = String>, R: Rows> Iterator for SortedEncodeStream<'_, I, R> {
    type Item = Result<Encoded<R>, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(window) = self.take_window() {
                return Some(Ok(window));
            }
            if self.done {
                return None;
            }
            match self.inner.next() {
                None => self.done = true,
                Some(Err(PoolError::PoisonText { index, preview })) => {
                    self.done = true;
                    let index = self.input_row(index);
                    return Some(Err(PoolError::PoisonText { index, preview }));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                // Pieces come in stream order; one may end one window and start the next.
                Some(Ok(piece)) => {
                    // `skipped` holds stream rows; keep them relative to the current window.
                    let start = self.window_start;
                    self.skipped.extend(piece.skipped.iter().map(|s| s - start));
                    self.filled += piece.embeddings.rows();
                    self.rows.append(piece.embeddings);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunk sizes of windows of `window` texts over `texts` texts.
    fn chunk_sizes(texts: usize, window: usize, chunk_size: usize, batch: usize) -> Vec<usize> {
        let windows = SortedWindows {
            texts: (0..texts).map(|i| "x".repeat(i % 7)),
            window,
            chunk_size,
            batch_size: batch,
            pending: VecDeque::new(),
            orders: Rc::new(RefCell::new(VecDeque::new())),
        };
        windows.map(|chunk| chunk.len()).collect()
    }

    #[test]
    fn full_windows_get_whole_chunks_and_the_last_is_spread() {
        // The command's default for two workers: 1000-text chunks, windows of 16 chunks.
        let full = vec![1000; 16];
        assert_eq!(chunk_sizes(16_000, 16_000, 1000, 32), full);
        // 1,500 texts: 16 chunks of 93 or 94, not 1000 + 500.
        let last = chunk_sizes(1500, 16_000, 1000, 32);
        assert_eq!(last, [[94; 12].as_slice(), &[93; 4]].concat());
        // A full window, then a last one of 1,500.
        let both = chunk_sizes(17_500, 16_000, 1000, 32);
        assert_eq!(both, [full.as_slice(), &last].concat());
        // No chunk smaller than a batch, and a remainder smaller than one is one chunk.
        assert_eq!(chunk_sizes(100, 16_000, 1000, 32), [34, 33, 33]);
        assert_eq!(chunk_sizes(20, 16_000, 1000, 32), [20]);
        // Batches larger than chunks: whole chunks still.
        assert_eq!(chunk_sizes(25, 40, 10, 64), [9, 8, 8]);
    }
}
