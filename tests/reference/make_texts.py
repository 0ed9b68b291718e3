"""Builds tests/data/texts.jsonl: real prose of varied length plus the hard cases.

Prose comes from Debian's `fortunes` package (apt-get install fortunes). The output is committed;
this script only documents how it was made and can rebuild it.
"""
import json
import pathlib
import random

FORTUNES = pathlib.Path("/usr/share/games/fortunes")
OUT = pathlib.Path(__file__).resolve().parent.parent / "data" / "texts.jsonl"


def fortunes():
    texts = []
    for name in sorted(p.name for p in FORTUNES.iterdir() if "." not in p.name):
        raw = (FORTUNES / name).read_bytes().decode("utf-8", errors="replace")
        texts += [t.strip("\n") for t in raw.split("\n%\n") if t.strip()]
    return texts


def main():
    rng = random.Random(20261123)
    pool = fortunes()
    rng.shuffle(pool)
    short = [t for t in pool if len(t) < 80][:60]
    medium = [t for t in pool if 80 <= len(t) < 400][:70]
    long = [t for t in pool if 400 <= len(t) < 1500][:40]
    # Far past every max_seq_length (256 for MiniLM, 512 for MPNet): concatenated fortunes.
    very_long = [" ".join(pool[200 + 40 * i: 200 + 40 * i + 8 * (i + 1)]) for i in range(10)]
    hard = [
        "",
        " ",
        "   \t\n  ",
        "\u00a0\u2003",
        "\n",
        "人工智能正在改变我们处理文本的方式。",
        "東京は日本の首都です。今日はいい天気ですね。",
        "한국어 문장은 이렇게 생겼습니다.",
        "مرحبا بالعالم، هذه جملة باللغة العربية.",
        "שלום עולם, זה משפט בעברית.",
        "Привет, мир! Это предложение на русском языке.",
        "Γειά σου Κόσμε, αυτή είναι μια ελληνική πρόταση.",
        "नमस्ते दुनिया, यह हिंदी में एक वाक्य है।",
        "สวัสดีชาวโลก นี่คือประโยคภาษาไทย",
        "🎉🚀 Launch day! 👩‍👩‍👧‍👦 family emoji, flags 🇩🇪🇯🇵 and skin tones 👍🏽",
        "control\u0000chars\u0007bell\u001b[31mred\u001b[0m and a tab\there",
        "zero\u200bwidth\u200djoiner\ufeffBOM",
        "combining: e\u0301 vs \u00e9, A\u030a vs \u00c5",
        "right\u200fto\u200eleft marks",
        "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ① ② ③",
        "∀x ∈ ℝ: x² ≥ 0 ⇒ √(x²) = |x|",
        "a" * 1200,
        "https://example.com/path?query=1&other=two#fragment user@example.org",
        "fn main() { println!(\"hello {}\", 42); }",
        "!!!!!!!!?????........,,,,,;;;;;",
        "HeLLo WoRLD, MiXeD CaSe TeXt",
        "Crème brûlée, façade, naïve, Zürich, São Paulo, Ångström",
        "windows\r\nline\r\nendings",
        "Mixed 中文 English русский 日本語 عربى in one sentence.",
        "[CLS] [SEP] [PAD] [MASK] <s> </s> <pad> special token strings typed by a user",
        " ".join(["repetition"] * 400),
    ]
    texts = short + medium + long + very_long + hard
    with OUT.open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"t{i:03d}", "text": t}, ensure_ascii=False) + "\n")
    print(f"{len(texts)} texts -> {OUT}")


if __name__ == "__main__":
    main()
