"""Makes a StaticEmbedding model of a real one's size for benchmarks, without the hub.

A `StaticEmbedding` (ST's module for model2vec / potion and static-retrieval-mrl models) over
all-MiniLM-L6-v2's tokenizer (30,522 entries), a random table (seed 0) `--dim` wide (256: the
potion models' width; static-retrieval-mrl-en-v1 has 1024), then Normalize, saved by
sentence-transformers itself. Its outputs mean nothing; its cost per token is a real static
model's (tokenization, and a row added per token), and both sides of the benchmark load the same
table, so their outputs must still agree.

    python scripts/make_static_model.py --tokenizer-from models/all-MiniLM-L6-v2 --output models/static-random
"""
import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer-from", required=True, help="a model folder with tokenizer.json")
    parser.add_argument("--output", required=True)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(os.path.join(args.tokenizer_from, "tokenizer.json"))
    # The file's truncation and padding belong to the transformer it came with.
    tokenizer.no_truncation()
    static = StaticEmbedding(tokenizer, embedding_dim=args.dim)
    model = SentenceTransformer(modules=[static, Normalize()], device="cpu")
    model.save(args.output)
    print(f"{args.output}: StaticEmbedding {tokenizer.get_vocab_size()} x {args.dim}, Normalize")


if __name__ == "__main__":
    main()
