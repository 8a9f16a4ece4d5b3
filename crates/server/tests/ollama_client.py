"""The official `ollama` Python client, unmodified, against a running Hearth
server: list, show, ps, embed, chat and generate (whole and streamed, and
equal to the OpenAI API's greedy reply), JSON format, pull with progress,
copy and delete, errors.
Usage: python3 ollama_client.py BASE_URL MODEL EMBEDDING_MODEL OPENAI_GREEDY_REPLY."""

import math
import sys

import ollama

base, model, embedder, openai_reply = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
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

msgs = [{"role": "user", "content": "Name a color."}]
opts = {"temperature": 0, "num_predict": 12, "seed": 1}
whole = client.chat(model=f"{model}:latest", messages=msgs, options=opts, stream=False)
assert whole.message.content == openai_reply, (whole.message.content, openai_reply)
assert whole.done and whole.eval_count > 0 and whole.prompt_eval_count > 0 and whole.total_duration > 0, whole
pieces = [c.message.content for c in client.chat(model=model, messages=msgs, options=opts, stream=True)]
assert "".join(pieces) == whole.message.content, pieces

gen = client.generate(model=model, prompt="Name a color.", options=opts, stream=False)
assert gen.response == openai_reply and gen.done, gen
streamed = "".join(c.response for c in client.generate(model=model, prompt="Name a color.", options=opts, stream=True))
assert streamed == gen.response, streamed
raw = client.generate(model=model, prompt="The capital of France is", raw=True, options={"temperature": 0, "num_predict": 4, "stop": ["\n"]})
assert raw.response.startswith(" Paris"), raw.response

as_json = client.chat(model=model, messages=msgs, format="json", options={"temperature": 1.0, "num_predict": 60, "seed": 3})
import json as _json
assert isinstance(_json.loads(as_json.message.content), dict), as_json.message.content

try:
    client.chat(model=model, messages=[{"role": "user", "content": "What is this?", "images": ["aGVsbG8="]}])
    raise AssertionError("an image was accepted")
except ollama.ResponseError as e:
    assert e.status_code == 400 and "image" in e.error, e

# The model cache: pull (already local: it answers at once), copy, list, delete.
progress = list(client.pull(model, stream=True))
assert progress[0].status == "pulling manifest" and progress[-1].status == "success", progress
assert client.pull(model).status == "success"
try:
    client.pull("no-such-model:7b")
    raise AssertionError("an unknown model was pulled")
except ollama.ResponseError as e:
    assert e.status_code == 404, e
client.copy(model, "tiny:chat")
listed = {m.model: m for m in client.list().models}
assert "tiny:chat" in listed and listed["tiny:chat"].details.family == "llama", listed
other = client.show("tiny:chat")
assert other.details.quantization_level == "Q4_1" and "completion" in other.capabilities, other
assert other.modelinfo["llama.context_length"] > 0, other.modelinfo
client.delete("tiny:chat")
assert "tiny:chat" not in [m.model for m in client.list().models]
for call in (lambda: client.delete("tiny:chat"), lambda: client.copy("no-such-model", "x")):
    try:
        call()
        raise AssertionError("a missing model was found")
    except ollama.ResponseError as e:
        assert e.status_code == 404, e
try:
    client.copy(model, "../escape")
    raise AssertionError("a bad name was accepted")
except ollama.ResponseError as e:
    assert e.status_code == 400, e

print("ollama client: ok")
