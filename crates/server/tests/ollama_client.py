"""The official `ollama` Python client, unmodified, against a running Hearth
server: list, show, ps, version, embed (the parts of Ollama's API Hearth
speaks so far). Usage: python3 ollama_client.py BASE_URL MODEL EMBEDDING_MODEL."""

import math
import sys

import ollama

base, model, embedder = sys.argv[1], sys.argv[2], sys.argv[3]
client = ollama.Client(host=base)

names = [m.model for m in client.list().models]
assert f"{model}:latest" in names, names
shown = client.show(f"{model}:latest")
assert shown.details.format == "gguf" and shown.modelinfo["general.architecture"], shown
assert "completion" in shown.capabilities, shown.capabilities
assert [m.model for m in client.ps().models] == [f"{model}:latest"]

out = client.embed(model=embedder, input=["The quick brown fox.", "A cat sleeps."])
assert len(out.embeddings) == 2 and len(out.embeddings[0]) == 384, out
assert abs(math.sqrt(sum(x * x for x in out.embeddings[0])) - 1) < 1e-4
assert out.prompt_eval_count > 0
legacy = client.embeddings(model=embedder, prompt="The quick brown fox.")
assert max(abs(a - b) for a, b in zip(legacy.embedding, out.embeddings[0])) < 1e-5

try:
    client.show("no-such-model")
    raise AssertionError("an unknown model was shown")
except ollama.ResponseError as e:
    assert e.status_code == 404 and "no-such-model" in e.error, e

print("ollama client: ok")
