"""Makes a SPLADE model the size of a real one for the benchmark: all-MiniLM-L6-v2's encoder
(6 layers, 384 wide, the 30,522-token BERT vocabulary) under a BERT masked-language-model head
whose weights are random (tied decoder, bias lowered so that rows keep a few hundred active
entries, as a trained SPLADE model's do), saved in ST's SparseEncoder layout. Its outputs mean
nothing; its cost per text is a real SPLADE model's (the vocabulary-wide logits dominate). No SPLADE checkpoint can be fetched here (no network but
package registries), so the benchmark measures this one.

    python scripts/make_splade_model.py --encoder-from models/all-MiniLM-L6-v2 --output DIR
"""
import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoder-from", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import AutoTokenizer, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM.from_pretrained(args.encoder_from)  # the head is initialised fresh
    with torch.no_grad():
        model.get_output_embeddings().bias.add_(-3.8)
    tokenizer = AutoTokenizer.from_pretrained(args.encoder_from)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        encoder = SparseEncoder(modules=[Transformer(tmp, transformer_task="fill-mask",
                                                     max_seq_length=256),
                                         SpladePooling("max")], device="cpu")
        encoder.save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
