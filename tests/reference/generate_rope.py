"""Computes the rotary frequencies transformers gives each layer of a model, for config.json
files in every key set the rotary models we run have come in: transformers 4's `rope_theta` /
`rope_scaling` (with the older `type` key), transformers 5's `rope_parameters`, flat or per
layer type, and the scaled variants we run (`linear`, `llama3`).

    scripts/reference-env.sh          # once: a venv with the pinned versions in requirements.txt
    .venv-reference/bin/python tests/reference/generate_rope.py

Writes (committed; CI never runs this script):
    tests/data/reference/rope_frequencies.json   per case: config.json's contents and, per
        layer, the `inv_freq` buffer of the model's rotary embedding as transformers builds it
"""
import json
import os
import pathlib
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"

import transformers
from transformers import AutoConfig, AutoModel

OUT = pathlib.Path(__file__).resolve().parents[1] / "data" / "reference" / "rope_frequencies.json"

# Tiny shapes: the rotary embedding depends on the head width and the rope keys only.
SHAPE = dict(vocab_size=16, pad_token_id=0, hidden_size=8, num_hidden_layers=4, num_attention_heads=2,
             intermediate_size=16)
LLAMA3 = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)

CASES = [
    # Llama 3.1's config.json: 64 frequencies, some in each of llama3's three bands.
    dict(name="llama3.1, transformers 4 keys", model_type="llama", head_dim=128,
         max_position_embeddings=131072, rope_theta=500000.0,
         rope_scaling=dict(LLAMA3, original_max_position_embeddings=8192, rope_type="llama3")),
    # No original_max_position_embeddings: transformers takes max_position_embeddings.
    dict(name="llama3, transformers 5 keys, no original length", model_type="llama", head_dim=32,
         max_position_embeddings=256,
         rope_parameters=dict(LLAMA3, rope_type="llama3", rope_theta=10000.0)),
    # A top-level original_max_position_embeddings (Phi-3's place for it) wins over
    # max_position_embeddings when the frequencies are computed (transformers' validation warns
    # about 4096 all the same: it runs before the key is read).
    dict(name="llama3, original length at the top level", model_type="llama", head_dim=32,
         max_position_embeddings=4096, original_max_position_embeddings=64, rope_theta=10000.0,
         rope_scaling=dict(LLAMA3, rope_type="llama3")),
    # The older `type` key.
    dict(name="linear, older type key", model_type="llama", head_dim=16, rope_theta=10000.0,
         rope_scaling={"type": "linear", "factor": 4.0}),
    dict(name="mistral linear, transformers 5 keys", model_type="mistral", head_dim=16,
         rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}),
    dict(name="qwen3 default", model_type="qwen3", head_dim=16, rope_theta=20000.0,
         rope_scaling=None),
    # Gemma 3 4B's keys: rope_scaling applies to the full layers only.
    dict(name="gemma3 linear, transformers 4 keys", model_type="gemma3_text", head_dim=16,
         sliding_window_pattern=2, rope_theta=1000000.0, rope_local_base_freq=10000.0,
         rope_scaling={"rope_type": "linear", "factor": 8.0}),
    dict(name="gemma3 linear, transformers 5 keys", model_type="gemma3_text", head_dim=16,
         layer_types=["sliding_attention", "full_attention", "sliding_attention",
                      "full_attention"],
         rope_parameters={
             "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
    # Gemma 2: one table for both kinds of layer, from the keys as the Llama family reads them.
    dict(name="gemma2 linear, transformers 4 keys", model_type="gemma2", head_dim=16,
         rope_theta=20000.0, rope_scaling={"rope_type": "linear", "factor": 4.0}),
    dict(name="gemma2 default, transformers 5 keys", model_type="gemma2", head_dim=16,
         rope_parameters={"rope_type": "default", "rope_theta": 3000.0}),
    # ModernBertConfig merges rope_scaling into both layer types.
    dict(name="modernbert linear, transformers 4 keys", model_type="modernbert",
         global_attn_every_n_layers=2, global_rope_theta=160000.0, local_rope_theta=10000.0,
         rope_scaling={"rope_type": "linear", "factor": 2.0}),
]


def layer_frequencies(config, model) -> list[list[float]]:
    rotary = model.rotary_emb
    # One table for every layer (the Llama family, whatever its layer_types), or one per type.
    one_table = hasattr(rotary, "inv_freq")
    layer_types = config.layer_types if not one_table else [None] * config.num_hidden_layers
    rows = []
    for layer_type in layer_types:
        suffix = "" if one_table else f"{layer_type}_"
        scaling = getattr(rotary, f"{suffix}attention_scaling")
        assert scaling == 1.0, (layer_type, scaling)  # cos and sin unscaled: what we run
        rows.append([float(f) for f in getattr(rotary, f"{suffix}inv_freq").tolist()])
    return rows


def main():
    cases = []
    for case in CASES:
        name = case.pop("name")
        config_json = dict(SHAPE, **case)
        with tempfile.TemporaryDirectory() as tmp:
            (pathlib.Path(tmp) / "config.json").write_text(json.dumps(config_json))
            config = AutoConfig.from_pretrained(tmp)
        model = AutoModel.from_config(config)
        cases.append(dict(name=name, config=config_json,
                          inverse_frequencies=layer_frequencies(config, model)))
    document = dict(transformers=transformers.__version__, cases=cases)
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
