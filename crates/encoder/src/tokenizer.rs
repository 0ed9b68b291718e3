//! Tokenization that gives exactly the input ids sentence-transformers feeds its model:
//! the folder's `tokenizer.json`, truncated (longest-first, right side) to `max_seq_length`
//! including special tokens, `do_lower_case` from sentence_bert_config.json honoured, and no
//! padding (batches are padded to their own longest text).

use std::path::Path;

use pool_encode_model::{ModelFolder, TokenBatch};
use rayon::prelude::*;
use tokenizers::normalizers::{Lowercase, Sequence};
use tokenizers::{Encoding, NormalizerWrapper, Tokenizer, TruncationParams};

use crate::error::{EncodeError, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_seq_length: usize,
}

impl TextTokenizer {
    pub fn load(folder: &ModelFolder) -> Result<Self> {
        let path = folder.tokenizer_path();
        if !path.exists() {
            return Err(EncodeError::Tokenizer {
                path: path.clone(),
                message: "missing required file (only fast-tokenizer tokenizer.json folders are supported)".into(),
            });
        }
        let mut inner = Tokenizer::from_file(&path).map_err(|e| EncodeError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if folder.do_lower_case {
            let lowercase = NormalizerWrapper::Lowercase(Lowercase);
            let normalizer = match inner.get_normalizer().cloned() {
                Some(existing) => {
                    NormalizerWrapper::Sequence(Sequence::new(vec![lowercase, existing]))
                }
                None => lowercase,
            };
            inner.with_normalizer(Some(normalizer));
        }
        inner.with_padding(None);
        let pad_id = pad_token_id(&folder.transformer_dir, &inner);
        let mut tokenizer = TextTokenizer {
            inner,
            pad_id,
            max_seq_length: folder.max_seq_length,
        };
        tokenizer.set_max_seq_length(folder.max_seq_length)?;
        Ok(tokenizer)
    }

    /// The underlying Hugging Face tokenizer (ids ↔ tokens).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    pub fn set_max_seq_length(&mut self, max_seq_length: usize) -> Result<()> {
        self.inner
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| {
                EncodeError::InvalidOption(format!("max_seq_length {max_seq_length}: {e}"))
            })?;
        self.max_seq_length = max_seq_length;
        Ok(())
    }

    /// One text's encoding, truncated to `max_seq_length`. The tokenizer keeps the cut-off rest
    /// of a long text as "overflowing" encodings; they are dropped at once, so a chunk of long
    /// documents holds only the tokens the model sees (1,000 texts of 5,000 words held 250 MB
    /// of overflow in a worker before).
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        let mut encoding = self
            .inner
            .encode_fast(text, true)
            .map_err(|e| EncodeError::Tokenize(e.to_string()))?;
        drop(encoding.take_overflowing());
        Ok(encoding)
    }

    /// Tokenizes many texts, in parallel on the current rayon pool.
    pub fn encode_all<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Encoding>> {
        let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        texts.into_par_iter().map(|t| self.encode(t)).collect()
    }

    /// ST's prompt length: the prompt's tokens, less a trailing special token (SEP / EOS).
    pub fn prompt_length(&self, prompt: &str) -> Result<usize> {
        let encoding = self.encode(prompt)?;
        let ids = encoding.get_ids();
        let special = self.inner.get_added_tokens_decoder();
        let trailing_special = ids
            .last()
            .is_some_and(|id| special.get(id).is_some_and(|t| t.special));
        Ok(ids.len() - usize::from(trailing_special))
    }

    /// Right-pads `encodings` into one batch whose width is the longest text rounded up to a
    /// multiple of `pad_to_multiple` (padding is masked out, so results do not change).
    pub fn batch(&self, encodings: &[&Encoding], pad_to_multiple: usize) -> TokenBatch {
        let longest = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let seq_len = longest.next_multiple_of(pad_to_multiple.max(1));
        let mut batch = TokenBatch {
            ids: Vec::with_capacity(encodings.len() * seq_len),
            type_ids: Vec::with_capacity(encodings.len() * seq_len),
            mask: Vec::with_capacity(encodings.len() * seq_len),
            batch: encodings.len(),
            seq_len,
        };
        for e in encodings {
            let pad = seq_len - e.len();
            batch.ids.extend_from_slice(e.get_ids());
            batch.ids.extend(std::iter::repeat_n(self.pad_id, pad));
            batch.type_ids.extend_from_slice(e.get_type_ids());
            batch.type_ids.extend(std::iter::repeat_n(0, pad));
            batch.mask.extend_from_slice(e.get_attention_mask());
            batch.mask.extend(std::iter::repeat_n(0, pad));
        }
        batch
    }
}

/// The pad token named in tokenizer_config.json (a string or `{"content": …}`), else 0.
pub(crate) fn pad_token_id(dir: &Path, tokenizer: &Tokenizer) -> u32 {
    let config: Option<serde_json::Value> = std::fs::read(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let name = config
        .as_ref()
        .and_then(|c| c.get("pad_token"))
        .and_then(|t| {
            t.as_str().map(str::to_string).or_else(|| {
                t.get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            })
        });
    name.and_then(|n| tokenizer.token_to_id(&n))
        .or_else(|| tokenizer.get_padding().map(|p| p.pad_id))
        .unwrap_or(0)
}
