"""The official `openai` Python client's Responses API, unmodified, against a
running Hearth server: responses.create whole and streamed (equal to the chat
API's greedy reply), the stream helper, a function tool round trip (whole and
streamed), previous_response_id, store false, a JSON schema, errors.
Usage: python3 responses_client.py BASE_URL MODEL OPENAI_GREEDY_REPLY."""

import json
import sys

import openai

base, model, openai_reply = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0)

whole = client.responses.create(model=model, input="Name a color.", temperature=0, max_output_tokens=12)
assert whole.output_text == openai_reply, (whole.output_text, openai_reply)
assert whole.status in ("completed", "incomplete") and whole.usage.output_tokens > 0, whole
assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens, whole.usage

# Raw events: the documented sequence, numbered in order.
events = list(client.responses.create(model=model, input="Name a color.", temperature=0, max_output_tokens=12, stream=True))
kinds = [e.type for e in events]
assert kinds[:2] == ["response.created", "response.in_progress"], kinds
assert kinds[-1] in ("response.completed", "response.incomplete"), kinds
assert [e.sequence_number for e in events] == list(range(len(events))), kinds
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert deltas == openai_reply, (deltas, openai_reply)
assert events[-1].response.output_text == openai_reply and events[-1].response.usage.output_tokens == whole.usage.output_tokens

# The stream helper accumulates the same response as a whole one (it needs a
# reply that completes: a cut one ends with `response.incomplete`, as OpenAI's).
done = client.responses.create(model=model, input="Say hello.", temperature=0, max_output_tokens=300)
assert done.status == "completed", done
with client.responses.stream(model=model, input="Say hello.", temperature=0, max_output_tokens=300) as s:
    for _ in s:
        pass
    final = s.get_final_response()
assert final.output_text == done.output_text and final.usage.output_tokens == done.usage.output_tokens, final

# Instructions and a conversation continued by id.
first = client.responses.create(model=model, instructions="Answer in one word.", input="Name a color.", temperature=0, max_output_tokens=8)
second = client.responses.create(model=model, previous_response_id=first.id, input="And another one?", temperature=0, max_output_tokens=8)
assert second.previous_response_id == first.id and second.usage.input_tokens > first.usage.input_tokens, (first.usage, second.usage)
assert client.responses.retrieve(first.id).id == first.id

unstored = client.responses.create(model=model, input="Hi", max_output_tokens=2, store=False)
for call in (lambda: client.responses.retrieve(unstored.id),
             lambda: client.responses.create(model=model, input="Hi", previous_response_id=unstored.id, max_output_tokens=2)):
    try:
        call()
        raise AssertionError("an unstored response was found")
    except openai.NotFoundError:
        pass

# Structured output through text.format.
schema = {"type": "object", "properties": {"color": {"type": "string", "maxLength": 20}}, "required": ["color"], "additionalProperties": False}
r = client.responses.create(model=model, input="Name a color.", max_output_tokens=40,
                            text={"format": {"type": "json_schema", "name": "color", "schema": schema, "strict": True}})
assert set(json.loads(r.output_text)) == {"color"}, r.output_text

# A function tool round trip: the call, its output sent back as an item, an answer.
tools = [{
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]},
}]
for stream in (False, True):
    kwargs = dict(model=model, input="What is the weather in Paris?", tools=tools, tool_choice="required", temperature=0, max_output_tokens=80, parallel_tool_calls=False)
    if stream:
        with client.responses.stream(**kwargs) as s:
            for _ in s:
                pass
            r = s.get_final_response()
    else:
        r = client.responses.create(**kwargs)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather", r.output
    assert isinstance(json.loads(calls[0].arguments)["city"], str), calls[0]
    answer = client.responses.create(
        model=model, tools=tools, temperature=0, max_output_tokens=30, previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": json.dumps({"temperature": 18})}],
    )
    assert answer.output and answer.status in ("completed", "incomplete"), answer

for bad, param in ((dict(tools=[{"type": "web_search"}]), "tools[0].type"), (dict(background=True), "background"),
                   (dict(frobnicate=1), "frobnicate")):
    try:
        extra = {"frobnicate": 1} if "frobnicate" in bad else {}
        kwargs = {k: v for k, v in bad.items() if k != "frobnicate"}
        client.responses.create(model=model, input="Hi", max_output_tokens=2, extra_body=extra, **kwargs)
        raise AssertionError(f"{bad} was accepted")
    except openai.BadRequestError as e:
        assert e.param == param, (e.param, param)

print("responses client: ok")
