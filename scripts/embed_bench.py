"""sentence-transformers on the same lines as crates/engine/examples/embed_bench.rs
(first 512 non-empty lines, batches of 32, median of 5), for a side-by-side figure.
Needs sentence-transformers installed beside the project (never a dependency of it).
Usage: python3 scripts/embed_bench.py MODEL_DIR TEXT_FILE [THREADS]"""

import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, text_file = sys.argv[1], sys.argv[2]
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
model = SentenceTransformer(model_dir, device="cpu")
lines = [l.strip() for l in open(text_file, encoding="utf-8") if l.strip()][:512]
rates = []
for _ in range(5):
    t0 = time.perf_counter()
    model.encode(lines, batch_size=32)
    rates.append(len(lines) / (time.perf_counter() - t0))
rates.sort()
print(json.dumps({"engine": "sentence-transformers " + __import__("sentence_transformers").__version__,
                  "torch": torch.__version__, "sentences": len(lines), "batch": 32, "sentences_per_s": round(rates[2], 1)}))
