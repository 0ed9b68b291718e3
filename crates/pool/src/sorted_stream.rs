//! A stream encoded in windows sorted by length: what `Pool::encode` does for a whole input,
//! with bounded memory for an input of any size.
//!
//! The input is cut into windows of `window` texts; each window is sorted longest first and fed,
//! window after window, into one [`EncodeStream`] (so the pool never drains between windows);
//! the rows of a window are put back in input order once its last row has arrived, and the
//! window is yielded whole. Chunks then hold texts of similar length and pad little.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use pool_encode_encoder::Embeddings;

use crate::{EncodeStream, Encoded, PoolError, Rows};

/// The input side: reads a window, sorts it, records its order, hands out the sorted texts.
pub(crate) struct SortedWindows<I> {
    texts: I,
    window: usize,
    pending: std::vec::IntoIter<String>,
    /// Each window's order (sorted position → position in the window), oldest first.
    orders: Rc<RefCell<VecDeque<Vec<usize>>>>,
}

impl<I: Iterator<Item = String>> Iterator for SortedWindows<I> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if let Some(text) = self.pending.next() {
            return Some(text);
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
        self.orders.borrow_mut().push_back(order);
        self.pending = sorted.into_iter();
        self.pending.next()
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
    /// `window` is rounded up to a whole number of `chunk_size` chunks, so that no chunk mixes
    /// two windows' texts.
    pub(crate) fn new(
        texts: I,
        window: usize,
        chunk_size: usize,
        dim: usize,
        start: impl FnOnce(SortedWindows<I>) -> EncodeStream<'p, SortedWindows<I>, R>,
    ) -> Self {
        let orders = Rc::new(RefCell::new(VecDeque::new()));
        let windows = SortedWindows {
            texts,
            window: window.max(1).next_multiple_of(chunk_size.max(1)),
            pending: Vec::new().into_iter(),
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
