//! Where a call's texts are cut into chunks, the units that workers pull.
//!
//! A stream of unknown length is cut into chunks of `chunk_size` texts as it is read. A stretch
//! of texts held whole (a call's sorted input, a sorted window) is cut into chunks of equal
//! size instead, so that its last chunk is not a small remainder, and the last stretch of an
//! input can be cut finer than `chunk_size` so that every worker gets a share of the end instead
//! of one worker finishing a full chunk alone while the others idle.

/// Texts per chunk unless the caller says: for a call of `texts` texts, ST's size (about 10
/// chunks per worker, at most 5000 texts each), but at least `in_flight` texts, the batches a
/// worker keeps in flight (`batch_size` × batches): a worker encodes one chunk at a time, so a
/// chunk of one batch leaves its other threads or GPU streams nothing of their own. 1000 for a
/// stream of unknown length.
pub(crate) fn default_chunk_size(texts: Option<usize>, workers: usize, in_flight: usize) -> usize {
    match texts {
        Some(texts) => texts
            .div_ceil(workers.max(1) * 10)
            .clamp(1, 5000)
            .max(in_flight),
        None => 1000,
    }
}

/// How many chunks a call's input held whole is cut into ([`cut_evenly`]): enough for chunks of
/// at most `chunk_size` texts, rounded up to a multiple of the workers so that they end
/// together, with no small remainder chunk, or one chunk more than the others, at the end.
pub(crate) fn whole_call_chunks(texts: usize, chunk_size: usize, workers: usize) -> usize {
    texts
        .div_ceil(chunk_size.max(1))
        .next_multiple_of(workers.max(1))
}

/// How many chunks a sorted window of `len` texts is cut into ([`cut_evenly`]), when a full
/// window holds `window` texts, a whole number of `chunk_size` chunks: a full window's count,
/// for the last, shorter window too, so that the end of the input is spread over the workers,
/// unless that would make chunks smaller than a batch. It depends on nothing else, so a resumed
/// run that keeps these three cuts the same chunks.
pub(crate) fn window_chunks(len: usize, window: usize, chunk_size: usize, batch: usize) -> usize {
    let full = window / chunk_size.max(1);
    len.div_ceil(chunk_size.max(1))
        .max(full.min(len / batch.max(1)))
}

/// Cuts `texts` into `chunks` contiguous chunks whose sizes differ by at most one (fewer when
/// there are fewer texts than chunks; none when there are no texts).
pub(crate) fn cut_evenly(texts: Vec<String>, chunks: usize) -> impl Iterator<Item = Vec<String>> {
    let chunks = chunks.clamp(1, texts.len().max(1));
    let (base, longer) = (texts.len() / chunks, texts.len() % chunks);
    let mut texts = texts.into_iter();
    (0..chunks)
        .map(move |i| {
            texts
                .by_ref()
                .take(base + usize::from(i < longer))
                .collect()
        })
        .filter(|chunk: &Vec<String>| !chunk.is_empty())
}

/// Chunks of `chunk_size` texts read from `texts` as they come (the last one may be shorter).
pub struct FixedChunks<I> {
    texts: I,
    chunk_size: usize,
}

impl<I: Iterator<Item = String>> FixedChunks<I> {
    pub(crate) fn new(texts: I, chunk_size: usize) -> Self {
        FixedChunks {
            texts,
            chunk_size: chunk_size.max(1),
        }
    }
}

impl<I: Iterator<Item = String>> Iterator for FixedChunks<I> {
    type Item = Vec<String>;

    fn next(&mut self) -> Option<Vec<String>> {
        let chunk: Vec<String> = self.texts.by_ref().take(self.chunk_size).collect();
        (!chunk.is_empty()).then_some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    fn sizes(chunks: impl Iterator<Item = Vec<String>>) -> Vec<usize> {
        chunks.map(|c| c.len()).collect()
    }

    #[test]
    fn even_cuts_keep_order_and_differ_by_at_most_one() {
        assert_eq!(sizes(cut_evenly(numbered(10), 3)), [4, 3, 3]);
        assert_eq!(sizes(cut_evenly(numbered(1500), 2)), [750, 750]);
        assert_eq!(sizes(cut_evenly(numbered(2), 5)), [1, 1]);
        assert_eq!(sizes(cut_evenly(numbered(0), 4)), Vec::<usize>::new());
        assert_eq!(sizes(cut_evenly(numbered(3), 0)), [3]);
        let joined: Vec<String> = cut_evenly(numbered(17), 4).flatten().collect();
        assert_eq!(joined, numbered(17));
    }

    #[test]
    fn default_chunks_are_st_sized_but_hold_the_batches_in_flight() {
        // ST's: ceil(texts / workers / 10), at most 5000.
        assert_eq!(default_chunk_size(Some(10_000), 2, 32), 500);
        assert_eq!(default_chunk_size(Some(1_000_000), 2, 32), 5000);
        // 300 texts on one worker with two batches of 32 in flight: 64, not ST's 30.
        assert_eq!(default_chunk_size(Some(300), 1, 64), 64);
        assert_eq!(default_chunk_size(Some(300), 2, 32), 32);
        assert_eq!(default_chunk_size(None, 2, 32), 1000);
    }

    #[test]
    fn whole_calls_get_a_multiple_of_the_workers() {
        assert_eq!(whole_call_chunks(300, 64, 1), 5);
        assert_eq!(whole_call_chunks(300, 64, 2), 6);
        assert_eq!(whole_call_chunks(1500, 1000, 2), 2);
        assert_eq!(whole_call_chunks(2500, 1000, 2), 4);
        assert_eq!(whole_call_chunks(3, 1000, 4), 4);
        assert_eq!(whole_call_chunks(0, 1000, 4), 0);
    }

    #[test]
    fn a_last_window_gets_a_full_windows_chunk_count_if_batches_allow() {
        assert_eq!(window_chunks(16_000, 16_000, 1000, 32), 16);
        assert_eq!(window_chunks(1500, 16_000, 1000, 32), 16);
        assert_eq!(window_chunks(100, 16_000, 1000, 32), 3);
        assert_eq!(window_chunks(20, 16_000, 1000, 32), 1);
        assert_eq!(window_chunks(25, 40, 10, 64), 3);
    }

    #[test]
    fn fixed_chunks_cut_as_read() {
        assert_eq!(
            sizes(FixedChunks::new(numbered(25).into_iter(), 10)),
            [10, 10, 5]
        );
        assert_eq!(
            sizes(FixedChunks::new(numbered(0).into_iter(), 10)),
            Vec::<usize>::new()
        );
        let joined: Vec<String> = FixedChunks::new(numbered(25).into_iter(), 7)
            .flatten()
            .collect();
        assert_eq!(joined, numbered(25));
    }
}
