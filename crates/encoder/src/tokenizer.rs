//! Tokenization that gives exactly the input ids sentence-transformers feeds its model:
//! the folder's `tokenizer.json` (with the pipeline transformers builds for classes that ignore
//! the file's, see `use_class_pipeline`), truncated (longest-first, right side) to
//! `max_seq_length` including special tokens, `do_lower_case` from sentence_bert_config.json
//! honoured, and no padding (batches are padded to their own longest text). A `StaticEmbedding`
//! model's tokenizer is its file as it is (its truncation too, if any) without special tokens,
//! as ST's `StaticEmbedding` runs it.

use pool_encode_model::config::RegisteredTokenizer;
use pool_encode_model::{InputModule, ModelFolder, TokenBatch};
use rayon::prelude::*;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::{BertNormalizer, Lowercase, NFC, Replace, Sequence};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{
    Encoding, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
    TruncationDirection, TruncationParams,
};

use crate::error::{EncodeError, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    /// Tokens kept of a text; `usize::MAX`: all of them (a `StaticEmbedding` tokenizer that
    /// does not truncate).
    max_seq_length: usize,
    /// The pre-tokenizer splits words apart at whitespace and texts are cut on the right, so
    /// long texts may be tokenized from a prefix ([`TextTokenizer::encode`]).
    words_apart: bool,
    /// False for a `StaticEmbedding` model, whose texts have none.
    add_special_tokens: bool,
}

/// A long text's first try is a prefix of this many bytes per kept token (English takes 4–6,
/// CJK 3); each further try, four times longer.
const PREFIX_BYTES_PER_TOKEN: usize = 8;

impl TextTokenizer {
    pub fn load(folder: &ModelFolder) -> Result<Self> {
        let path = folder.tokenizer_path();
        if !path.exists() {
            return Err(EncodeError::Tokenizer {
                path: path.clone(),
                message: "missing required file (only fast-tokenizer tokenizer.json folders are supported)".into(),
            });
        }
        // Read once: parsed here, and searched below as transformers searches it.
        let text = std::fs::read_to_string(&path).map_err(|e| EncodeError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut inner: Tokenizer = text.parse().map_err(|e| EncodeError::Tokenizer {
            path: path.clone(),
            message: format!("{e}"),
        })?;
        inner.with_padding(None);
        let mut tokenizer = match &folder.input {
            InputModule::Transformer(module) => {
                // transformers searches the file's text for this.
                let byte_level = text.contains("\"ByteLevel\"");
                let hub_class = module
                    .tokenizer_config
                    .get("tokenizer_class")
                    .and_then(|c| c.as_str());
                let class = resolved_class(
                    hub_class,
                    module.architecture.registered_tokenizer(),
                    byte_level,
                );
                use_class_pipeline(&mut inner, &module.tokenizer_config, class);
                if module.do_lower_case {
                    let lowercase = NormalizerWrapper::Lowercase(Lowercase);
                    let normalizer = match inner.get_normalizer().cloned() {
                        Some(existing) => {
                            NormalizerWrapper::Sequence(Sequence::new(vec![lowercase, existing]))
                        }
                        None => lowercase,
                    };
                    inner.with_normalizer(Some(normalizer));
                }
                TextTokenizer {
                    pad_id: pad_token_id(&module.tokenizer_config, &inner),
                    words_apart: inner.get_pre_tokenizer().is_some_and(splits_at_whitespace),
                    inner,
                    max_seq_length: module.max_seq_length,
                    add_special_tokens: true,
                }
            }
            InputModule::Static(_) => {
                let truncation = inner.get_truncation();
                let max_seq_length = truncation.map_or(usize::MAX, |t| t.max_length);
                // A prefix gives the whole text's tokens only when the text is cut on the right.
                let words_apart = inner.get_pre_tokenizer().is_some_and(splits_at_whitespace)
                    && truncation.is_some_and(|t| {
                        t.direction == TruncationDirection::Right && t.stride == 0
                    });
                TextTokenizer {
                    pad_id: pad_token_id(&serde_json::Value::Null, &inner),
                    max_seq_length,
                    words_apart,
                    inner,
                    add_special_tokens: false,
                }
            }
        };
        if tokenizer.add_special_tokens {
            tokenizer.set_max_seq_length(tokenizer.max_seq_length)?;
        }
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

    /// One text's encoding, truncated to `max_seq_length`, as the whole text gives it. A long
    /// text is tokenized from a prefix when that gives the same tokens (see
    /// [`encode_prefix`](Self::encode_prefix)): the tokenizer would normalize, split and look up
    /// every word of it only to drop all but the first `max_seq_length` tokens (12 ms for a
    /// text of 5,000 words, 80 texts/s a thread: less than a GPU encodes).
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        if self.words_apart {
            let mut bytes = PREFIX_BYTES_PER_TOKEN.saturating_mul(self.max_seq_length);
            while bytes < text.len() {
                if let Some(encoding) = self.encode_prefix(text, bytes)? {
                    return Ok(encoding);
                }
                bytes = bytes.saturating_mul(4);
            }
        }
        let mut encoding = self
            .inner
            .encode_fast(text, self.add_special_tokens)
            .map_err(|e| EncodeError::Tokenize(e.to_string()))?;
        // The tokenizer keeps the cut-off rest of a long text as "overflowing" encodings:
        // dropped at once, so a chunk of long texts holds only the tokens the model sees.
        drop(encoding.take_overflowing());
        Ok(encoding)
    }

    /// `text`'s encoding from its first `bytes` or so, cut before a whitespace, if that is
    /// surely the whole text's: the prefix has more tokens than are kept, and every kept token
    /// comes from a word (pre-token) before the prefix's last. The pre-tokenizer splits at
    /// whitespace and each word is tokenized on its own, so the words before the cut are
    /// tokenized as in the whole text; the last might not be (it is checked, not assumed).
    fn encode_prefix(&self, text: &str, bytes: usize) -> Result<Option<Encoding>> {
        let Some(prefix) = prefix_before_whitespace(text, bytes) else {
            return Ok(None);
        };
        // With offsets: `encode_fast` leaves out the word ids the check needs.
        let mut encoding = self
            .inner
            .encode(prefix, self.add_special_tokens)
            .map_err(|e| EncodeError::Tokenize(e.to_string()))?;
        let overflow = encoding.take_overflowing();
        let last_kept = encoding.get_word_ids().iter().flatten().max();
        let last_of_prefix = overflow
            .iter()
            .flat_map(Encoding::get_word_ids)
            .flatten()
            .max();
        Ok(match (last_kept, last_of_prefix) {
            (Some(kept), Some(last)) if kept < last => Some(encoding),
            _ => None,
        })
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

/// Whether `pre_tokenizer` splits at whitespace, each piece tokenized on its own (BERT's,
/// whitespace, SentencePiece's metaspace with splitting, GPT-2's byte-level regex), alone or in
/// a sequence. Other pre-tokenizers (or none) may tokenize across whitespace.
fn splits_at_whitespace(pre_tokenizer: &PreTokenizerWrapper) -> bool {
    match pre_tokenizer {
        PreTokenizerWrapper::BertPreTokenizer(_)
        | PreTokenizerWrapper::Whitespace(_)
        | PreTokenizerWrapper::WhitespaceSplit(_) => true,
        PreTokenizerWrapper::Metaspace(metaspace) => metaspace.get_split(),
        PreTokenizerWrapper::ByteLevel(byte_level) => byte_level.use_regex,
        PreTokenizerWrapper::Sequence(sequence) => {
            sequence.as_ref().iter().any(splits_at_whitespace)
        }
        _ => false,
    }
}

/// The start of `text` up to about `bytes` (to its last whitespace before, else its first
/// after), without trailing whitespace; `None` if there is no such whitespace or nothing before it.
fn prefix_before_whitespace(text: &str, bytes: usize) -> Option<&str> {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end]
        .rfind(char::is_whitespace)
        .or_else(|| text[end..].find(char::is_whitespace).map(|i| end + i))?;
    let prefix = text[..cut].trim_end();
    (!prefix.is_empty()).then_some(prefix)
}

/// The tokenizer class transformers 5.23's AutoTokenizer builds, from the class that
/// tokenizer_config.json names (`hub`) and the one registered for config.json's model_type;
/// `None`: `TokenizersBackend`, tokenizer.json as it is. In AutoTokenizer's order: a
/// `LlamaTokenizer` whose file is byte-level (Llama 3's) is read as it is; a named class that
/// differs from the registered one wins, unless the model type's hub classes are known to be
/// wrong or its registered tokenizer is the file itself; else the named class, else the
/// registered one.
fn resolved_class(
    hub: Option<&str>,
    registered: RegisteredTokenizer,
    byte_level_file: bool,
) -> Option<&str> {
    let base = |class: &str| class.trim_end_matches("Fast").to_owned();
    let overridden = matches!(
        registered,
        RegisteredTokenizer::Class {
            overrides_hub: true,
            ..
        }
    );
    if hub.is_some_and(|hub| base(hub) == "LlamaTokenizer") && byte_level_file && !overridden {
        return None;
    }
    match (hub, registered) {
        (Some(hub), RegisteredTokenizer::Class { name, .. }) if base(hub) != base(name) => {
            Some(if overridden { name } else { hub })
        }
        (Some(_), RegisteredTokenizer::File) => None,
        (Some(hub), _) => Some(hub),
        (None, RegisteredTokenizer::Class { name, .. }) => Some(name),
        (None, _) => None,
    }
}

/// transformers 5, which sentence-transformers 6 runs, builds the normalizer and pre-tokenizer
/// of a tokenizer class with its own constructor in code, from tokenizer_config.json's options,
/// and takes only the vocabulary (and a SentencePiece charsmap) from tokenizer.json. So does
/// this, for the classes of the architectures we run, so that a checkpoint whose file says
/// otherwise is tokenized as ST 6 tokenizes it. Hub XLM-R files (transformers 4's converter) are
/// such: they replace runs of spaces and run Metaspace alone, which keeps a trailing "▁", so a
/// text ending in whitespace got one token more than ST 6 gives it. Where tokenizer_config.json
/// names no class, transformers takes the one of config.json's model_type (see
/// [`resolved_class`]), with that class's default options: a DistilBERT checkpoint gets
/// BertTokenizer, which lowercases, whatever its file says.
fn use_class_pipeline(tokenizer: &mut Tokenizer, config: &serde_json::Value, class: Option<&str>) {
    let flag = |key: &str| config.get(key).and_then(serde_json::Value::as_bool);
    let (normalizer, pre_tokenizer) = match class.map(|c| c.trim_end_matches("Fast")) {
        Some("BertTokenizer" | "DistilBertTokenizer" | "MPNetTokenizer") => (
            Some(NormalizerWrapper::BertNormalizer(BertNormalizer::new(
                true,
                flag("tokenize_chinese_chars").unwrap_or(true),
                flag("strip_accents"),
                flag("do_lower_case").unwrap_or(true),
            ))),
            PreTokenizerWrapper::BertPreTokenizer(BertPreTokenizer),
        ),
        Some("RobertaTokenizer") => (
            None,
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(
                flag("add_prefix_space").unwrap_or(false),
                true,
                true,
            )),
        ),
        Some("Qwen2Tokenizer") => {
            // NFC, then Qwen's word regex (one digit a piece, a word keeps the character before
            // it), then bytes as characters.
            let words = Split::new(
                SplitPattern::Regex(QWEN2_WORDS.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .expect("QWEN2_WORDS is a valid regex");
            let bytes = ByteLevel::new(flag("add_prefix_space").unwrap_or(false), true, false);
            (
                Some(NormalizerWrapper::NFC(NFC)),
                PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
                    PreTokenizerWrapper::Split(words),
                    PreTokenizerWrapper::ByteLevel(bytes),
                ])),
            )
        }
        Some("GemmaTokenizer") => {
            // Spaces become "▁" and the whole text is one piece (the split at " " finds none
            // after that), over a BPE model with byte fallback.
            use_byte_fallback_bpe(tokenizer);
            let spaces = Replace::new(" ", "▁").expect("a literal pattern is valid");
            let words = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
                .expect("a literal pattern is valid");
            (
                Some(NormalizerWrapper::Replace(spaces)),
                PreTokenizerWrapper::Split(words),
            )
        }
        Some("LlamaTokenizer") => {
            // No normalizer; Metaspace turns spaces into "▁" without splitting, and prepends
            // one: to the text's start (or never, with add_prefix_space false), or to every
            // piece between special tokens as well where the config asks for `legacy`.
            use_byte_fallback_bpe(tokenizer);
            let prepend = match (flag("add_prefix_space"), flag("legacy")) {
                (Some(false), _) => PrependScheme::Never,
                (_, Some(true)) => PrependScheme::Always,
                _ => PrependScheme::First,
            };
            (
                None,
                PreTokenizerWrapper::Metaspace(Metaspace::new('▁', prepend, false)),
            )
        }
        Some(class @ ("XLMRobertaTokenizer" | "CamembertTokenizer" | "T5Tokenizer")) => {
            let charsmap = match tokenizer.get_normalizer() {
                Some(p @ NormalizerWrapper::Precompiled(_)) => Some(p.clone()),
                Some(NormalizerWrapper::Sequence(sequence)) => sequence
                    .as_ref()
                    .iter()
                    .find(|n| matches!(n, NormalizerWrapper::Precompiled(_)))
                    .cloned(),
                _ => None,
            };
            // T5Tokenizer has no `add_prefix_space` option: it always prepends.
            let prepend = match flag("add_prefix_space") {
                Some(false) if class != "T5Tokenizer" => PrependScheme::Never,
                _ => PrependScheme::Always,
            };
            let words = PreTokenizerSequence::new(vec![
                PreTokenizerWrapper::WhitespaceSplit(WhitespaceSplit),
                PreTokenizerWrapper::Metaspace(Metaspace::new('▁', prepend, true)),
            ]);
            (charsmap, PreTokenizerWrapper::Sequence(words))
        }
        _ => return,
    };
    tokenizer.with_normalizer(normalizer);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
}

/// The BPE model as the SentencePiece-style classes (GemmaTokenizer, LlamaTokenizer) build
/// it: unknown characters as their UTF-8 bytes (`<0xNN>` tokens), runs of unknowns fused, no
/// dropout.
fn use_byte_fallback_bpe(tokenizer: &mut Tokenizer) {
    if let ModelWrapper::BPE(bpe) = tokenizer.get_model() {
        let mut bpe = bpe.clone();
        bpe.fuse_unk = true;
        bpe.byte_fallback = true;
        bpe.dropout = None;
        tokenizer.with_model(bpe);
    }
}

/// transformers' `Qwen2Tokenizer.PRETOKENIZE_REGEX`.
const QWEN2_WORDS: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pad token named in tokenizer_config.json (a string or `{"content": …}`), else 0.
pub(crate) fn pad_token_id(config: &serde_json::Value, tokenizer: &Tokenizer) -> u32 {
    let name = config.get("pad_token").and_then(|t| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn data_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
    }

    /// Long texts made of the test texts (every script and odd character among them), joined
    /// by each kind of separator: spaces, line breaks, tabs, wide and no-break spaces, none.
    fn long_texts() -> Vec<String> {
        let texts: Vec<String> = std::fs::read_to_string(data_dir().join("texts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let record: serde_json::Value = serde_json::from_str(l).unwrap();
                record["text"].as_str().unwrap().to_string()
            })
            .collect();
        let separators = [" ", "\n", "\t", "  \n ", "\u{3000}", "\u{a0}", ""];
        let mut long = Vec::new();
        for (i, separator) in separators.iter().enumerate() {
            for start in (i..texts.len()).step_by(23) {
                for count in [3, 12, 40] {
                    let parts: Vec<&str> = texts
                        .iter()
                        .cycle()
                        .skip(start)
                        .take(count)
                        .map(String::as_str)
                        .collect();
                    long.push(parts.join(separator));
                }
            }
        }
        // Runs without whitespace, and whitespace everywhere.
        long.push("漢字かな交じり文".repeat(600));
        long.push(format!("{} tail", "x".repeat(5000)));
        long.push(" a ".repeat(3000));
        long.push(format!(
            "{}{}",
            " ".repeat(4000),
            "words after spaces ".repeat(200)
        ));
        long
    }

    /// Texts tokenized from a prefix get exactly the tokens of the whole text, for every tiny
    /// model's tokenizer and for kept lengths from a few tokens to more than many of the texts have.
    #[test]
    fn a_prefix_gives_the_whole_texts_tokens() {
        let texts = long_texts();
        let (mut from_prefix, mut checked) = (0, 0);
        for model in [
            "bert-mean-normalize-old",
            "distilbert-lowercase-old",
            "mpnet-multi-old",
            // Byte-level BPE; SentencePiece Unigram with the NFKC charsmap and Metaspace.
            "roberta-mean-normalize-new",
            "xlm-roberta-cls-mean-old",
        ] {
            let folder = ModelFolder::load(&data_dir().join("models").join(model)).unwrap();
            let mut prefixed = TextTokenizer::load(&folder).unwrap();
            assert!(prefixed.words_apart, "{model}");
            let mut whole = TextTokenizer::load(&folder).unwrap();
            whole.words_apart = false;
            for max_seq_length in [5, 64, 200, 512] {
                prefixed.set_max_seq_length(max_seq_length).unwrap();
                whole.set_max_seq_length(max_seq_length).unwrap();
                for text in &texts {
                    let bytes = PREFIX_BYTES_PER_TOKEN * max_seq_length;
                    if text.len() > bytes && prefixed.encode_prefix(text, bytes).unwrap().is_some()
                    {
                        from_prefix += 1;
                    }
                    let (ours, expected) =
                        (prefixed.encode(text).unwrap(), whole.encode(text).unwrap());
                    let what = format!("{model}, max_seq_length {max_seq_length}: {text:.60?}");
                    assert_eq!(ours.get_ids(), expected.get_ids(), "{what}");
                    assert_eq!(ours.get_type_ids(), expected.get_type_ids(), "{what}");
                    assert_eq!(
                        ours.get_attention_mask(),
                        expected.get_attention_mask(),
                        "{what}"
                    );
                    assert!(ours.get_overflowing().is_empty(), "{what}");
                    checked += 1;
                }
            }
        }
        // The short way is taken (at its first try) for about half of them.
        assert!(from_prefix > checked / 3, "{from_prefix} of {checked}");
    }

    #[test]
    fn prefixes_end_before_whitespace() {
        assert_eq!(prefix_before_whitespace("one two three", 6), Some("one"));
        assert_eq!(prefix_before_whitespace("one two three", 7), Some("one"));
        assert_eq!(
            prefix_before_whitespace("one two three", 8),
            Some("one two")
        );
        // No whitespace before: the first after.
        assert_eq!(prefix_before_whitespace("onetwo three", 3), Some("onetwo"));
        assert_eq!(prefix_before_whitespace("onetwothree", 3), None);
        assert_eq!(prefix_before_whitespace("   x", 2), None);
        // Inside a multi-byte character: cut at a boundary, never panic.
        assert_eq!(prefix_before_whitespace("ab 漢字 c", 5), Some("ab"));
        assert_eq!(
            prefix_before_whitespace("漢字\u{3000}かな", 7),
            Some("漢字")
        );
        assert_eq!(prefix_before_whitespace("", 7), None);
    }
}
