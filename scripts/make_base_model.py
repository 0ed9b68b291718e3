"""Makes a base-sized sentence-transformers model for benchmarks, without the hub.

BERT with 768 hidden, 12 layers, 12 heads, 3072 intermediate (bert-base's shape), or with
`--arch modernbert` ModernBERT-base's shape (768 hidden, 22 layers, 12 heads, 1152 gated
intermediate, a global layer every third, windows of 128), or with `--arch qwen3`
Qwen3-Embedding-0.6B's (1024 hidden, 28 causal layers, 16 query heads of 128 sharing 8 key /
value heads, 3072 gated intermediate, last-token pooling), or with `--arch gemma3`
EmbeddingGemma-300m's (768 hidden, 24 bidirectional layers, five of every six sliding with
windows of 512, 3 query heads of 256 sharing 1 key / value head, 1152 gated intermediate), or
with `--arch mistral` e5-mistral-7b-instruct's (4096 hidden, 32 causal layers, 32 query heads of
128 sharing 8 key / value heads, 14336 gated intermediate, windows of 4096: 7.1B parameters,
saved in bfloat16 as the checkpoint is, in shards of at most `--max-shard-size` (5 GB) with
their index; about 60 GB of memory to make), randomly initialised (seed 0), with all-MiniLM-L6-v2's tokenizer, mean
pooling (last-token for qwen3 and mistral) and Normalize, saved by sentence-transformers
itself. `--layers N` keeps the width and takes N layers (a quick, smaller model of that shape). Its outputs mean nothing; its cost per token is a base model's, and both sides of the
benchmark load the same weights, so their outputs must still agree.

    python scripts/make_base_model.py --tokenizer-from models/all-MiniLM-L6-v2 --output models/bert-base-random
"""
import argparse
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer-from", required=True, help="a model folder with tokenizer files")
    parser.add_argument("--output", required=True)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--arch", choices=["bert", "modernbert", "qwen3", "gemma3", "mistral"],
                        default="bert")
    parser.add_argument("--layers", type=int, help="layers (default: the model's)")
    parser.add_argument("--max-shard-size", default="5GB", help="mistral: the largest shard")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import (AutoTokenizer, BertConfig, BertModel, Gemma3TextConfig,
                              Gemma3TextModel, MistralConfig, MistralModel, ModernBertConfig,
                              ModernBertModel, Qwen3Config, Qwen3Model)

    torch.manual_seed(0)
    layers = {"num_hidden_layers": args.layers} if args.layers else {}
    if args.arch == "modernbert":
        model = ModernBertModel(ModernBertConfig(
            **{"num_hidden_layers": 22, **layers}, vocab_size=30522, hidden_size=768,
            num_attention_heads=12, intermediate_size=1152, max_position_embeddings=8192,
            pad_token_id=0, cls_token_id=101, bos_token_id=101, sep_token_id=102,
            eos_token_id=102))
    elif args.arch == "qwen3":
        model = Qwen3Model(Qwen3Config(
            **{"num_hidden_layers": 28, **layers}, vocab_size=30522, hidden_size=1024,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, intermediate_size=3072,
            max_position_embeddings=32768, rope_parameters={"rope_type": "default",
                                                            "rope_theta": 1_000_000.0},
            pad_token_id=0, bos_token_id=101, eos_token_id=102))
    elif args.arch == "gemma3":
        model = Gemma3TextModel(Gemma3TextConfig(
            **{"num_hidden_layers": 24, **layers}, vocab_size=30522, hidden_size=768,
            num_attention_heads=3, num_key_value_heads=1, head_dim=256, intermediate_size=1152, query_pre_attn_scalar=256,
            sliding_window=512, use_bidirectional_attention=True, max_position_embeddings=2048,
            pad_token_id=0, bos_token_id=101, eos_token_id=102))
    elif args.arch == "mistral":
        # Made in bfloat16: 28 GB of float32 weights would not fit beside their copy.
        torch.set_default_dtype(torch.bfloat16)
        model = MistralModel(MistralConfig(
            **{"num_hidden_layers": 32, **layers}, vocab_size=30522, hidden_size=4096,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128,
            intermediate_size=14336, sliding_window=4096, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
            pad_token_id=0, bos_token_id=101, eos_token_id=102))
        torch.set_default_dtype(torch.float32)
    else:
        model = BertModel(BertConfig(**{"num_hidden_layers": 12, **layers}, vocab_size=30522,
                                     hidden_size=768, num_attention_heads=12,
                                     intermediate_size=3072, max_position_embeddings=512))
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="5GB")
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_from)
        tokenizer.model_max_length = args.max_seq_length
        tokenizer.save_pretrained(tmp)
        transformer = models.Transformer(tmp, max_seq_length=args.max_seq_length)
        mode = "lasttoken" if args.arch in ("qwen3", "mistral") else "mean"
        pooling = models.Pooling(transformer.get_word_embedding_dimension(), mode)
        SentenceTransformer(modules=[transformer, pooling, models.Normalize()]).save(args.output)
    if args.arch == "mistral":
        # ST saves one file; a 7B checkpoint comes in shards with an index.
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, max_shard_size=args.max_shard_size)
            shards = [f for f in os.listdir(tmp) if f.startswith("model")]
            if "model.safetensors.index.json" in shards:
                os.remove(os.path.join(args.output, "model.safetensors"))
                for name in shards:
                    shutil.copy(os.path.join(tmp, name), os.path.join(args.output, name))
    print(args.output)


if __name__ == "__main__":
    main()
