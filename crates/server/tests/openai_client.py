"""The official `openai` Python client, unmodified, against a running Hearth
server. Usage: python3 openai_client.py BASE_URL MODEL. Exits non-zero on
the first mismatch."""

import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0)

models = client.models.list()
assert [m.id for m in models.data] == [model], models

msgs = [{"role": "user", "content": "Name a color."}]
whole = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=12, seed=1)
text = whole.choices[0].message.content
assert text and whole.choices[0].finish_reason in ("stop", "length"), whole
assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0, whole.usage

pieces, finish, usage = [], None, None
stream = client.chat.completions.create(
    model=model, messages=msgs, temperature=0, max_tokens=12, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        pieces.append(c.delta.content or "")
        finish = c.finish_reason or finish
assert "".join(pieces) == text, ("stream differs", "".join(pieces), text)
assert finish == whole.choices[0].finish_reason and usage.completion_tokens == whole.usage.completion_tokens

two = client.chat.completions.create(model=model, messages=msgs, temperature=0.9, max_tokens=8, n=2, seed=3)
assert len(two.choices) == 2 and [c.index for c in two.choices] == [0, 1], two

lp = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=3, logprobs=True, top_logprobs=2)
content = lp.choices[0].logprobs.content
assert len(content) == lp.usage.completion_tokens and len(content[0].top_logprobs) == 2, lp

comp = client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=4, stop=["\n"])
assert comp.choices[0].text.startswith(" Paris"), comp

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 5000}], max_tokens=4)
    raise AssertionError("an over-long prompt was accepted")
except openai.BadRequestError as e:
    assert e.code == "context_length_exceeded", e

try:
    client.chat.completions.create(model="no-such-model", messages=msgs, max_tokens=4)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError:
    pass

print("openai client: ok")
