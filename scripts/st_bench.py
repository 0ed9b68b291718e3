"""The sentence-transformers side of the benchmark (bin/pool-encode-bench runs it).

Encodes the texts of a .jsonl file with ST (CPU, or a GPU with --device cuda) and prints one
JSON line with the timing (and on a GPU the mean utilisation while encoding, sampled with
NVML); writes the embeddings to --output so the benchmark can check both sides agree.
"""
import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", help="where the embeddings go (not with --tokenize-only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int)
    parser.add_argument("--pool", type=int, default=0,
                        help="use ST's multi-process pool with this many CPU workers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--sparse", action="store_true",
                        help="a SPLADE model (SparseEncoder); --output gets JSON lines of rows")
    parser.add_argument("--tokenize-only", action="store_true",
                        help="time model.tokenize over all texts (what encode does per batch), "
                        "on RAYON_NUM_THREADS threads; no --output written")
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer, SparseEncoder

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    texts = [json.loads(line)["text"] for line in open(args.input, encoding="utf-8")]
    # Half precision as ST documents it: the weights loaded in that dtype. float32 is asked for
    # too: transformers 5 would otherwise load a bfloat16 checkpoint (Qwen3-Embedding's,
    # e5-mistral's) in bfloat16.
    model_kwargs = {"dtype": getattr(torch, args.dtype)}
    kind = SparseEncoder if args.sparse else SentenceTransformer
    output_kwargs = {} if args.sparse else {"convert_to_numpy": True}
    model = kind(args.model, device=args.device, model_kwargs=model_kwargs)
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    monitor = GpuMonitor() if args.device.startswith("cuda") else None
    if args.tokenize_only:
        model.tokenize(texts[:64])  # warm-up
        start = time.perf_counter()
        model.tokenize(texts)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "texts": len(texts)}))
        return
    if args.pool:
        # ST's own pool, started outside the timing as its docs show (start_multi_process_pool).
        pool = model.start_multi_process_pool(["cpu"] * args.pool)
        model.encode(texts[:64], pool=pool, batch_size=args.batch_size)  # warm-up
        start = time.perf_counter()
        embeddings = model.encode(texts, pool=pool, batch_size=args.batch_size, **output_kwargs)
        seconds = time.perf_counter() - start
        model.stop_multi_process_pool(pool)
    else:
        # Warm-up. On a GPU a whole pass, as pool-encode gets: torch's first f16 pass over new
        # shapes is several times slower than the next (H100, all-MiniLM-L6-v2, batch 32:
        # about 1,050 texts/s after a 64-text warm-up, about 2,950 after a whole pass).
        model.encode(texts if monitor else texts[:64], batch_size=args.batch_size)
        if monitor:
            monitor.start()
        start = time.perf_counter()
        embeddings = model.encode(texts, batch_size=args.batch_size, **output_kwargs)
        seconds = time.perf_counter() - start
    if args.sparse:
        with open(args.output, "w") as out:
            for row in embeddings.to_dense().cpu():
                idx = torch.nonzero(row).flatten()
                out.write(json.dumps({"indices": idx.tolist(), "values": row[idx].tolist()}) + "\n")
    else:
        np.save(args.output, embeddings.astype(np.float32))
    report = {"seconds": seconds, "texts": len(texts), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    if monitor:
        report.update(monitor.stop())
    print(json.dumps(report))


class GpuMonitor:
    """Samples GPU 0's utilisation and memory every 100 ms through NVML (nvidia-ml-py)."""

    def __init__(self):
        self.samples = []
        self.running = False

    def start(self):
        import threading
        try:
            import pynvml
            pynvml.nvmlInit()
        except Exception:  # no NVML: report nothing
            return
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.running = True

        def sample():
            while self.running:
                util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
                self.samples.append((util, mem))
                time.sleep(0.1)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()

    def stop(self):
        if not self.running:
            return {}
        self.running = False
        self.thread.join()
        if not self.samples:
            return {}
        return {"gpu_util": sum(s[0] for s in self.samples) / len(self.samples),
                "gpu_mem": max(s[1] for s in self.samples)}


if __name__ == "__main__":  # the guard ST's multi-process pool needs
    main()
