"""Builds the tiny StaticEmbedding test models (ST's token-table models: model2vec / potion,
static-retrieval-mrl) and computes their reference outputs with sentence-transformers (the
static half of generate.py, whose tokenizer trainers and helpers it reuses).

    scripts/reference-env.sh          # once: a venv with the pinned versions in requirements.txt
    .venv-reference/bin/python tests/reference/generate_static.py [NAME ...]   # NAME: only these

Writes (all committed; CI never runs this script):
    tests/data/models/<name>/          tiny StaticEmbedding models in the layouts ST loads
    tests/data/reference/<name>/       ST's outputs for tests/data/texts.jsonl, as generate.py
        writes them, less what a StaticEmbedding has not: token embeddings and a settable
        max_seq_length (meta.json's max_seq_length is null: ST's is math.inf)
"""
import json
import os
import pathlib
import shutil
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import modules as st_modules

from generate import (MODELS, REFERENCE, TEXTS, similarities_and_prompts, train_roberta_tokenizer,
                      train_tokenizer, write_npy)

DIM = 48

SPECS = [
    # static-retrieval-mrl's layout: the table in 0_StaticEmbedding as `embedding.weight`, no
    # Normalize, new class paths; a BERT WordPiece tokenizer (lowercasing) whose [CLS] / [SEP]
    # post-processor ST skips (add_special_tokens=False); query / document prompts.
    dict(name="static-wordpiece-new", tokenizer="bert", layout="st", truncation=None,
         dense=None, normalize=False, similarity="cosine",
         prompts={"query": "query: ", "document": "document: "}),
    # model2vec's layout (what `StaticEmbedding.from_model2vec` models are saved as on the
    # hub): the table in the root folder as f16 `embeddings` with a token `mapping` and
    # per-token `weights` that ST folds in; old class paths; a byte-level BPE tokenizer whose
    # file truncates at 100 tokens (ST keeps the file's truncation); a Dense, then Normalize.
    dict(name="static-model2vec-bpe-old", tokenizer="roberta", layout="model2vec", truncation=100,
         dense=(24, "torch.nn.modules.activation.Tanh"), normalize=True, similarity="dot",
         prompts=None),
]


def build(spec, seed):
    folder = MODELS / spec["name"]
    shutil.rmtree(folder, ignore_errors=True)
    tokenizer = (train_roberta_tokenizer("roberta") if spec["tokenizer"] == "roberta"
                 else train_tokenizer("bert"))
    backend = tokenizer.backend_tokenizer
    if spec["truncation"]:
        backend.enable_truncation(spec["truncation"])
    torch.manual_seed(seed)
    static = st_modules.StaticEmbedding(backend, embedding_dim=DIM)
    mods = [static]
    if spec["dense"]:
        mods.append(st_modules.Dense(DIM, spec["dense"][0],
                                     activation_function=getattr(torch.nn, spec["dense"][1].split(".")[-1])()))
    if spec["normalize"]:
        mods.append(st_modules.Normalize())
    st = SentenceTransformer(modules=mods, device="cpu", prompts=spec["prompts"],
                             similarity_fn_name=spec["similarity"])
    st.save(str(folder))
    (folder / "README.md").unlink(missing_ok=True)
    # ST 6 saves a first module into the root folder (modules.json path "").
    if spec["layout"] == "model2vec":
        to_model2vec_layout(folder, seed)
    else:
        into_subfolder(folder)


def into_subfolder(folder: pathlib.Path):
    """The table and tokenizer in 0_StaticEmbedding/, as ST 5 saved static-retrieval-mrl-en-v1."""
    static = folder / "0_StaticEmbedding"
    static.mkdir()
    for name in ["model.safetensors", "tokenizer.json"]:
        shutil.move(str(folder / name), str(static / name))
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = "0_StaticEmbedding"
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")


def to_model2vec_layout(folder: pathlib.Path, seed: int):
    """Stores the table as model2vec does: `embeddings` (f16, fewer rows than the vocabulary)
    with the row of each token in `mapping` and a per-token `weights`; modules.json with old
    class paths and the root folder as ".", as model2vec writes it."""
    table = load_file(str(folder / "model.safetensors"))["embedding.weight"]
    vocab = table.shape[0]
    generator = torch.Generator().manual_seed(seed)
    rows = vocab // 2
    mapping = torch.randint(0, rows, (vocab,), generator=generator, dtype=torch.int64)
    weights = torch.rand(vocab, generator=generator) + 0.5
    save_file({"embeddings": table[:rows].to(torch.float16).contiguous(), "mapping": mapping,
               "weights": weights}, str(folder / "model.safetensors"))
    modules = json.loads((folder / "modules.json").read_text())
    for module in modules:
        module["type"] = "sentence_transformers.models." + module["type"].rsplit(".", 1)[1]
        if module["idx"] == 0:
            module["path"] = "."
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")


def references(name: str):
    out = REFERENCE / name
    out.mkdir(parents=True, exist_ok=True)
    st = SentenceTransformer(str(MODELS / name), device="cpu")
    emb = st.encode(TEXTS, batch_size=16, convert_to_numpy=True)
    write_npy(out / "embeddings.npy", emb)
    with (out / "input_ids.jsonl").open("w") as f:
        for t in TEXTS:
            f.write(json.dumps(st.preprocess([t])["input_ids"].tolist()) + "\n")
    similarities_and_prompts(st, emb, out)
    write_npy(out / "truncate_dim_8_normalized.npy",
              st.encode(TEXTS, batch_size=16, truncate_dim=8, normalize_embeddings=True))
    meta = {
        "max_seq_length": None,
        "embedding_dimension": st.get_embedding_dimension(),
        "similarity_fn_name": st.similarity_fn_name,
        "prompts": st.prompts,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    lengths = [len(st.preprocess([t])["input_ids"]) for t in TEXTS]
    print(f"{name}: dim {emb.shape[1]}, {type(st[0]).__name__}, tokens per text "
          f"{min(lengths)}..{max(lengths)}, empty rows {int((abs(emb).sum(1) == 0).sum())}")


def main(names):
    for seed, spec in enumerate(SPECS):
        if names and spec["name"] not in names:
            continue
        build(spec, 500 + seed)
        references(spec["name"])


if __name__ == "__main__":
    main(sys.argv[1:])
