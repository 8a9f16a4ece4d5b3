"""The official `anthropic` Python client, unmodified, against a running
Hearth server: messages.create whole and streamed (equal to the OpenAI API's
greedy reply), a tool use round trip, count_tokens, errors.
Usage: python3 anthropic_client.py BASE_URL MODEL OPENAI_GREEDY_REPLY."""

import json
import sys

import anthropic

base, model, openai_reply = sys.argv[1], sys.argv[2], sys.argv[3]
client = anthropic.Anthropic(base_url=base, api_key="sesame", max_retries=0)

msgs = [{"role": "user", "content": "Name a color."}]
whole = client.messages.create(model=model, max_tokens=12, messages=msgs, extra_body={"temperature": 0})
assert whole.content[0].type == "text" and whole.content[0].text == openai_reply, (whole, openai_reply)
assert whole.stop_reason in ("end_turn", "max_tokens") and whole.usage.output_tokens > 0, whole

with client.messages.stream(model=model, max_tokens=12, messages=msgs, extra_body={"temperature": 0}) as s:
    events = list(s)
    final = s.get_final_message()
streamed = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
assert events[0].type == "message_start" and events[0].message.usage.input_tokens > 0, events[0]
assert streamed == openai_reply, (streamed, openai_reply)
assert final.usage.output_tokens == whole.usage.output_tokens, final

tools = [{
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]},
}]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
for stream in (False, True):
    kwargs = dict(model=model, max_tokens=80, messages=ask, tools=tools, extra_body={"temperature": 0},
                  tool_choice={"type": "any", "disable_parallel_tool_use": True})
    if stream:
        with client.messages.stream(**kwargs) as s:
            m = s.get_final_message()
    else:
        m = client.messages.create(**kwargs)
    assert m.stop_reason == "tool_use", m
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and isinstance(use.input["city"], str), use
    answer = client.messages.create(
        model=model, max_tokens=30, tools=tools, extra_body={"temperature": 0},
        messages=ask + [
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": json.dumps({"temperature": 18})}]},
        ],
    )
    assert answer.content and answer.stop_reason in ("end_turn", "max_tokens", "tool_use"), answer

# The count is the prompt the same request runs with.
# (Input read from the prefix cache is counted apart, as Anthropic counts it.)
def prompt_of(usage):
    return usage.input_tokens + (usage.cache_read_input_tokens or 0)

count = client.messages.count_tokens(model=model, messages=msgs)
assert count.input_tokens == prompt_of(whole.usage), (count, whole.usage)
with_system = client.messages.count_tokens(model=model, messages=msgs, system="Be brief.")
brief = client.messages.create(model=model, max_tokens=1, messages=msgs, system="Be brief.")
assert with_system.input_tokens == prompt_of(brief.usage), (with_system, brief.usage)
again = client.messages.create(model=model, max_tokens=1, messages=msgs, system="Be brief.")
assert again.usage.cache_read_input_tokens > 0 and prompt_of(again.usage) == with_system.input_tokens, again.usage

try:
    client.messages.create(model=model, max_tokens=4, messages=[{"role": "system", "content": "x"}])
    raise AssertionError("a system-role message was accepted")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body
# A model name not served is answered by the served model, which the reply names.
other = client.messages.create(model="claude-sonnet-4-5", max_tokens=4, messages=msgs)
assert other.model == model, other

print("anthropic client: ok")
