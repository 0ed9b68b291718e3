//! How sorted texts are cut into batches: at most `batch_size` texts and at most
//! `max_batch_tokens` padded tokens (texts × the longest text of the batch).

/// Length of the batch that starts at `lengths[0]`, for `lengths` sorted longest first (so the
/// first text sets the padded width). Always at least 1 when `lengths` is not empty: a text
/// longer than the budget goes alone.
pub fn next_batch_len(lengths: &[usize], batch_size: usize, max_batch_tokens: usize) -> usize {
    let Some(&longest) = lengths.first() else {
        return 0;
    };
    let by_tokens = (max_batch_tokens / longest.max(1)).max(1);
    batch_size.min(by_tokens).min(lengths.len()).max(1)
}

#[cfg(test)]
mod tests {
    use super::next_batch_len;

    #[test]
    fn batches_follow_size_and_token_budget() {
        let lengths = [100, 90, 50, 50, 10, 10, 10, 10];
        // No budget: batch_size decides.
        assert_eq!(next_batch_len(&lengths, 3, usize::MAX), 3);
        // 250 tokens at width 100: two texts.
        assert_eq!(next_batch_len(&lengths, 32, 250), 2);
        // Further on, width 50: five texts fit, four remain.
        assert_eq!(next_batch_len(&lengths[2..], 32, 250), 5);
        // A text longer than the budget still goes, alone.
        assert_eq!(next_batch_len(&lengths, 32, 60), 1);
        assert_eq!(next_batch_len(&[], 32, 60), 0);
        assert_eq!(next_batch_len(&[0, 0], 32, 60), 2);
    }
}
