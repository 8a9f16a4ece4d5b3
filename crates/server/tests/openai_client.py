"""The official `openai` Python client, unmodified, against a running Hearth
server. Usage: python3 openai_client.py BASE_URL MODEL. Exits non-zero on
the first mismatch."""

import json
import re
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0)

models = client.models.list()
assert [m.id for m in models.data][0] == model, models

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

# Clients that send a fixed model name are answered by the served model, which the reply names.
other = client.chat.completions.create(model="gpt-3.5-turbo", messages=msgs, max_tokens=4)
assert other.model == model, other

# Structured output: a strict JSON schema always parses and validates.
schema = {
    "type": "object",
    "properties": {"color": {"type": "string", "maxLength": 20}, "hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}},
    "required": ["color", "hex"],
    "additionalProperties": False,
}
for seed in range(3):
    r = client.chat.completions.create(
        model=model,
        messages=msgs,
        temperature=1.0,
        seed=seed,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "color", "schema": schema, "strict": True}},
    )
    value = json.loads(r.choices[0].message.content)
    assert set(value) == {"color", "hex"} and re.fullmatch("#[0-9a-f]{6}", value["hex"]), value
    assert r.choices[0].finish_reason == "stop", r

try:
    client.chat.completions.create(
        model=model, messages=msgs, max_tokens=4,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}},
    )
    raise AssertionError("an invalid schema was accepted")
except openai.BadRequestError as e:
    assert e.param == "response_format", e

# Tools: a required call, its result sent back, a final answer; not streamed, then streamed.
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
for stream in (False, True):
    kwargs = dict(model=model, messages=ask, tools=tools, tool_choice="required", temperature=0, max_tokens=80, parallel_tool_calls=False)
    if stream:
        calls, finish = {}, None
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for c in chunk.choices:
                finish = c.finish_reason or finish
                for tc in c.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                    entry["id"] = tc.id or entry["id"]
                    entry["name"] += tc.function.name or ""
                    entry["arguments"] += tc.function.arguments or ""
        assert finish == "tool_calls" and len(calls) == 1, (finish, calls)
        call = calls[0]
        call_id, name, arguments = call["id"], call["name"], call["arguments"]
    else:
        r = client.chat.completions.create(**kwargs)
        assert r.choices[0].finish_reason == "tool_calls", r
        tc = r.choices[0].message.tool_calls
        assert len(tc) == 1, tc
        call_id, name, arguments = tc[0].id, tc[0].function.name, tc[0].function.arguments
    args = json.loads(arguments)
    assert name == "get_weather" and isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit"), args
    history = ask + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temperature": 18, "sky": "clear"})},
    ]
    final = client.chat.completions.create(model=model, messages=history, tools=tools, temperature=0, max_tokens=40)
    answer = final.choices[0].message
    assert (answer.content or answer.tool_calls) and final.choices[0].finish_reason in ("stop", "length", "tool_calls"), final

try:
    client.chat.completions.create(
        model=model, max_tokens=4, tools=tools,
        messages=ask + [{"role": "tool", "tool_call_id": "call_nobody", "content": "18"}],
    )
    raise AssertionError("a tool message answering no call was accepted")
except openai.BadRequestError as e:
    assert "tool_call_id" in (e.param or ""), e

# Embeddings: the client asks for base64 by default and decodes it; floats must agree.
if "minilm" in [m.id for m in models.data]:
    sentences = ["The quick brown fox jumps over the lazy dog.", "A cat sleeps."]
    packed = client.embeddings.create(model="minilm", input=sentences)
    floats = client.embeddings.create(model="minilm", input=sentences, encoding_format="float")
    assert len(packed.data) == 2 and len(packed.data[0].embedding) == 384, packed
    for a, b in zip(packed.data, floats.data):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
    short = client.embeddings.create(model="minilm", input="hello", dimensions=128, encoding_format="float")
    assert len(short.data[0].embedding) == 128

print("openai client: ok")
