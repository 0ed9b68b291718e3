"""Builds the tiny SPLADE test models and computes their reference outputs with
sentence-transformers' SparseEncoder (the sparse half of generate.py, whose tokenizer trainer and
helpers it reuses).

    scripts/reference-env.sh          # once: a venv with the pinned versions in requirements.txt
    .venv-reference/bin/python tests/reference/generate_sparse.py [NAME ...]   # NAME: only these

Writes (all committed; CI never runs this script):
    tests/data/models/<name>/          tiny SPLADE models in every layout ST loads
    tests/data/reference/<name>/       ST's outputs for tests/data/texts.jsonl on that model:
        encode.jsonl, max_active_dims_8.jsonl (+ encode_query / encode_document for routers),
        one {"indices": [...], "values": [...]} line per text, indices ascending, as
        `pool-encode encode --kind sparse` writes them; meta.json: sparsity, decode, similarity.
"""
import json
import os
import pathlib
import shutil
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SparseEncoder
from sentence_transformers.base.modules import Router, Transformer
from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    ModernBertForMaskedLM,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

from generate import (
    FFN,
    HEADS,
    HIDDEN,
    LAYERS,
    MODELS,
    REFERENCE,
    TEXTS,
    edit_tokenizer_json,
    hub_sentencepiece_pipeline,
    make_tokenizer,
    modernbert_config,
)

# The pre-5.4 class paths of SPLADE checkpoints on the hub (naver/splade-*, opensearch-*).
OLD_TYPES = {
    "mlm": "sentence_transformers.sparse_encoder.models.MLMTransformer",
    "splade": "sentence_transformers.sparse_encoder.models.SpladePooling",
}

# name, architecture, tied decoder, layout (new: Transformer fill-mask + SpladePooling; old:
# MLMTransformer + SpladePooling with 5.x class paths; bare: a *ForMaskedLM folder alone;
# router: an inference-free model, SparseStaticEmbedding for queries), pooling strategy,
# activation, max_active_dims saved on the model, max_seq_length.
SPECS = [
    dict(name="splade-bert-tied-max", arch="bert", tied=True, layout="new", pooling="max",
         activation="relu", max_active_dims=None, max_seq_length=128),
    dict(name="splade-bert-untied-sum-old", arch="bert", tied=False, layout="old", pooling="sum",
         activation="relu", max_active_dims=None, max_seq_length=64),
    dict(name="splade-distilbert-untied-log1p", arch="distilbert", tied=False, layout="new",
         pooling="max", activation="log1p_relu", max_active_dims=16, max_seq_length=200),
    dict(name="splade-distilbert-tied-bare", arch="distilbert", tied=True, layout="bare",
         pooling="max", activation="relu", max_active_dims=None, max_seq_length=None),
    dict(name="splade-inference-free", arch="bert", tied=True, layout="router", pooling="max",
         activation="relu", max_active_dims=None, max_seq_length=256),
    # XLM-RoBERTa's head (`lm_head`, its own GELU) and positions, as multilingual SPLADE models have.
    dict(name="splade-xlm-roberta-untied", arch="xlm-roberta", tied=False, layout="new",
         pooling="max", activation="relu", max_active_dims=None, max_seq_length=300),
    # ModernBERT's head (`head`, the config's classifier activation, `decoder` tied to the token
    # embeddings), every bias switched on, and config.json in transformers 5's keys.
    dict(name="splade-modernbert-biases", arch="modernbert", tied=True, layout="new",
         pooling="max", activation="relu", max_active_dims=None, max_seq_length=300),
]


def build_mlm(arch: str, vocab: int, tied: bool, shift: float, seed: int, tokenizer):
    torch.manual_seed(seed)
    if arch == "modernbert":
        config = modernbert_config(vocab, tokenizer, norm_bias=True, attention_bias=True,
                                   mlp_bias=True, classifier_bias=True,
                                   classifier_activation="silu", tie_word_embeddings=tied)
        model = ModernBertForMaskedLM(config)
    elif arch == "bert":
        config = BertConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=FFN,
                            max_position_embeddings=512, initializer_range=0.1, pad_token_id=0,
                            tie_word_embeddings=tied)
        model = BertForMaskedLM(config)
    elif arch == "distilbert":
        config = DistilBertConfig(vocab_size=vocab, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                  hidden_dim=FFN, max_position_embeddings=512,
                                  initializer_range=0.1, pad_token_id=0, tie_word_embeddings=tied)
        model = DistilBertForMaskedLM(config)
    else:
        # hidden_act relu: the head's GELU is then not the encoder's activation.
        config = XLMRobertaConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, intermediate_size=FFN,
                                  max_position_embeddings=514, type_vocab_size=1,
                                  initializer_range=0.1, pad_token_id=1, bos_token_id=0,
                                  eos_token_id=2, hidden_act="relu", tie_word_embeddings=tied)
        model = XLMRobertaForMaskedLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        # A negative vocabulary bias makes most logits negative, so rows are sparse as a
        # trained SPLADE model's are (and zero weights are really zero, not rounding noise);
        # sum pooling keeps any token's positive logit, so it needs a larger shift.
        # (Untied BERT decodes with `cls.predictions.decoder.bias`, tied with `cls.predictions.bias`.)
        model.get_output_embeddings().bias.add_(shift)
    return model.eval()


def save_hf(model, tokenizer, folder: pathlib.Path, tied: bool):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    names = load_file(folder / "model.safetensors").keys()
    decoder = [n for n in names if "decoder.weight" in n or "vocab_projector.weight" in n]
    assert bool(decoder) != tied, f"tied={tied} but decoder weights {decoder}"


def build(spec, seed):
    folder = MODELS / spec["name"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tokenizer = make_tokenizer(spec["arch"])
    shift = -1.6 if spec["pooling"] == "sum" else -2.0
    model = build_mlm(spec["arch"], tokenizer.vocab_size, spec["tied"], shift, seed, tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        hf = pathlib.Path(tmp)
        save_hf(model, tokenizer, hf, spec["tied"])
        layout = spec["layout"]
        if layout == "bare":
            for f in hf.iterdir():
                shutil.copy(f, folder / f.name)
        elif layout == "old":
            for f in hf.iterdir():
                shutil.copy(f, folder / f.name)
            (folder / "sentence_bert_config.json").write_text(json.dumps(
                {"max_seq_length": spec["max_seq_length"], "do_lower_case": False}, indent=2))
            (folder / "1_SpladePooling").mkdir()
            (folder / "1_SpladePooling" / "config.json").write_text(json.dumps({
                "pooling_strategy": spec["pooling"], "activation_function": spec["activation"],
                "word_embedding_dimension": tokenizer.vocab_size}, indent=2))
            (folder / "modules.json").write_text(json.dumps([
                {"idx": 0, "name": "0", "path": "", "type": OLD_TYPES["mlm"]},
                {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": OLD_TYPES["splade"]},
            ], indent=2))
            (folder / "config_sentence_transformers.json").write_text(json.dumps({
                "__version__": {"sentence_transformers": "5.0.0"}, "model_type": "SparseEncoder",
                "prompts": {"query": "", "document": ""}, "default_prompt_name": None,
                "similarity_fn_name": "dot"}, indent=2))
        else:
            document = [Transformer(str(hf), transformer_task="fill-mask",
                                    max_seq_length=spec["max_seq_length"]),
                        SpladePooling(spec["pooling"], activation_function=spec["activation"])]
            if layout == "router":
                torch.manual_seed(seed + 100)
                # IDF-like weights, distinct so that top-k never has to break ties.
                idf = torch.rand(tokenizer.vocab_size) * 5
                query = SparseStaticEmbedding(tokenizer=tokenizer, weight=idf, frozen=True)
                modules = [Router.for_query_document(query_modules=[query],
                                                     document_modules=document)]
            else:
                modules = document
            st = SparseEncoder(modules=modules, device="cpu",
                               max_active_dims=spec["max_active_dims"])
            st.save(str(folder))
    for junk in ["README.md", "special_tokens_map.json"]:
        (folder / junk).unlink(missing_ok=True)
    if spec["arch"] == "xlm-roberta":
        edit_tokenizer_json(folder, hub_sentencepiece_pipeline)


def rows_jsonl(path: pathlib.Path, embeddings: torch.Tensor):
    """One line per row: ascending indices and their float32 values."""
    dense = embeddings.to_dense().float()
    with path.open("w") as f:
        for row in dense:
            idx = torch.nonzero(row).flatten()
            f.write(json.dumps({"indices": idx.tolist(),
                                "values": [float(v) for v in row[idx].tolist()]}) + "\n")


def references(name: str):
    out = REFERENCE / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    st = SparseEncoder(str(MODELS / name), device="cpu")
    emb = st.encode(TEXTS, batch_size=16)
    rows_jsonl(out / "encode.jsonl", emb)
    rows_jsonl(out / "max_active_dims_8.jsonl", st.encode(TEXTS, batch_size=16, max_active_dims=8))
    router = any(isinstance(m, Router) for m in st)
    if router:
        rows_jsonl(out / "encode_query.jsonl", st.encode_query(TEXTS, batch_size=16))
        rows_jsonl(out / "encode_document.jsonl", st.encode_document(TEXTS, batch_size=16))
    dense = emb.to_dense()
    a, b = dense[:6].to_sparse(), dense[6:12].to_sparse()
    meta = {
        "max_seq_length": st.max_seq_length,
        "embedding_dimension": st.get_embedding_dimension(),
        "similarity_fn_name": st.similarity_fn_name,
        "max_active_dims": st.max_active_dims,
        "router": router,
        "sparsity": st.sparsity(emb),
        "decode_top_5": st.decode(dense[:12].to_sparse(), top_k=5),
        "similarity": st.similarity(a, b).tolist(),
        "similarity_pairwise": st.similarity_pairwise(a, b).tolist(),
    }
    st.similarity_fn_name = "cosine"
    meta["similarity_cosine"] = st.similarity(a, b).tolist()
    (out / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"{name}: vocab {meta['embedding_dimension']}, max_seq_length {meta['max_seq_length']}, "
          f"active dims {meta['sparsity']['active_dims']:.1f}")


def main(names):
    for seed, spec in enumerate(SPECS):
        if names and spec["name"] not in names:
            continue
        build(spec, 50 + seed)
        references(spec["name"])


if __name__ == "__main__":
    main(sys.argv[1:])
