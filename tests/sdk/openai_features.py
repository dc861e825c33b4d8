"""Drives Switchboard's /v1 with the official OpenAI Python SDK and LangChain,
beyond plain chat: embeddings (both encodings, dimensions, token ids), tools
(streamed and not, round trip), structured output (parse(), LangChain's
with_structured_output and bind_tools), the Responses API, model lookup, and
the refusals of what is not supported.

Usage: openai_features.py BASE_URL API_KEY MODEL
Prints one JSON object of what the clients saw; tests/api/sdk_compat.rs
asserts on it (values, not just shapes). Each check is wrapped so one failure
is reported with the others rather than hiding them.
"""
import base64
import json
import struct
import sys
import traceback

import openai
from pydantic import BaseModel

base_url, api_key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
out = {}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK = "What is the weather in Paris? Use get_weather."


def check(name):
    def wrap(f):
        try:
            out[name] = f()
        except Exception as e:  # reported, asserted on by the Rust test
            out[name] = {"exception": type(e).__name__, "detail": str(e)[:500],
                         "trace": traceback.format_exc()[-800:]}
        return f
    return wrap


def refused(call):
    """The 400's param and code, or what happened instead."""
    try:
        call()
        return "accepted"
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        return {"status": e.status_code, "param": body.get("param"), "code": body.get("code")}


@check("embeddings")
def _():
    texts = ["the cat sat", "stock prices"]
    default = client.embeddings.create(model="local-hash-384", input=texts)  # SDK asks for base64
    floats = client.embeddings.create(model="local-hash-384", input=texts, encoding_format="float")
    raw = client.embeddings.with_raw_response.create(
        model="local-hash-384", input="the cat sat", encoding_format="base64").http_response.json()
    b64 = raw["data"][0]["embedding"]
    decoded = list(struct.unpack("<%df" % (len(base64.b64decode(b64)) // 4), base64.b64decode(b64)))
    return {
        "default": [d.embedding for d in default.data],
        "float": [d.embedding for d in floats.data],
        "base64_is_string": isinstance(b64, str),
        "base64_decoded": decoded,
        "usage": default.usage.prompt_tokens,
        "dimensions_refused": refused(lambda: client.embeddings.create(
            model="local-hash-384", input="x", dimensions=64)),
        "unknown_model": refused(lambda: client.embeddings.create(model="nope", input="x")),
        "bad_encoding": refused(lambda: client.embeddings.create(
            model="local-hash-384", input="x", encoding_format="hex")),
        "tokens": client.embeddings.create(
            model="local-hash-384", input=[[1820, 8415, 7731]], encoding_format="float").data[0].embedding,
    }


@check("tools")
def _():
    first = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": ASK}], tools=[WEATHER])
    choice = first.choices[0]
    call = choice.message.tool_calls[0]
    # The round trip: the call and its result go back, the model answers.
    second = client.chat.completions.create(model=model, tools=[WEATHER], messages=[
        {"role": "user", "content": ASK},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "22C and sunny"},
    ])
    # Streamed: the SDK's own assembly of tool_calls deltas.
    pieces, finish, first_delta = {}, None, None
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": ASK}], tools=[WEATHER],
            tool_choice="required", stream=True, stream_options={"include_usage": True}):
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or []:
                if first_delta is None:
                    first_delta = tc.model_dump(exclude_none=True)
                p = pieces.setdefault(tc.index, {"id": None, "name": "", "arguments": "", "fragments": 0})
                p["id"] = tc.id or p["id"]
                if tc.function and tc.function.name:
                    p["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    p["arguments"] += tc.function.arguments
                    p["fragments"] += 1
    return {
        "finish_reason": choice.finish_reason,
        "content": choice.message.content,
        "name": call.function.name,
        "arguments": json.loads(call.function.arguments),
        "id": call.id,
        "usage": first.usage.completion_tokens,
        "answer": second.choices[0].message.content,
        "answer_finish": second.choices[0].finish_reason,
        "stream_finish": finish,
        "stream_first_delta": first_delta,
        "stream_calls": pieces,
        "none": client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": ASK}], tools=[WEATHER],
            tool_choice="none").choices[0].finish_reason,
    }


class City(BaseModel):
    name: str
    population: int
    capital: bool


@check("parse")
def _():
    parsed = client.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format=City)
    json_object = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Reply in JSON."}],
        response_format={"type": "json_object"})
    return {"parsed": parsed.choices[0].message.parsed.model_dump(),
            "json_object": json.loads(json_object.choices[0].message.content)}


@check("responses")
def _():
    plain = client.responses.create(model=model, input="Say hello",
                                    instructions="Be brief.", max_output_tokens=50)
    events, text, seqs, final = [], "", [], None
    with client.responses.stream(model=model, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}]) as stream:
        for ev in stream:
            events.append(ev.type)
            seqs.append(ev.sequence_number)
            if ev.type == "response.output_text.delta":
                text += ev.delta
        final = stream.get_final_response()
    cut = client.responses.create(model=model, input="Say hello", max_output_tokens=3)
    tool = client.responses.create(model=model, input=ASK, tools=[{
        "type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}])
    calls = [o for o in tool.output if o.type == "function_call"]
    return {
        "text": plain.output_text, "status": plain.status,
        "usage": {"input": plain.usage.input_tokens, "output": plain.usage.output_tokens},
        "stream_text": text, "stream_events": sorted(set(events)), "first": events[0],
        "last": events[-1], "seq_ok": seqs == list(range(len(seqs))),
        "final_text": final.output_text, "final_usage": final.usage.output_tokens,
        "cut_status": cut.status, "cut_reason": cut.incomplete_details.reason if cut.incomplete_details else None,
        "tool_name": calls[0].name if calls else None,
        "tool_args": json.loads(calls[0].arguments) if calls else None,
    }


@check("models")
def _():
    try:
        client.models.retrieve("no-such-model")
        missing = "found"
    except openai.NotFoundError as e:
        missing = {"status": e.status_code, "code": e.body.get("code") if isinstance(e.body, dict) else None}
    try:
        client.get("/no-such-route", cast_to=object)
        route = "found"
    except openai.NotFoundError as e:
        route = {"status": e.status_code, "type": e.body.get("type") if isinstance(e.body, dict) else None}
    return {"retrieved": client.models.retrieve(model).id, "missing": missing, "route": route}


@check("refused")
def _():
    msgs = [{"role": "user", "content": "x"}]
    return {
        "logprobs": refused(lambda: client.chat.completions.create(model=model, messages=msgs, logprobs=True)),
        "top_logprobs": refused(lambda: client.chat.completions.create(
            model=model, messages=msgs, top_logprobs=2)),
        "logit_bias": refused(lambda: client.chat.completions.create(
            model=model, messages=msgs, logit_bias={"50256": -100})),
        "functions": refused(lambda: client.chat.completions.create(
            model=model, messages=msgs, functions=[WEATHER["function"]])),
        "previous_response_id": refused(lambda: client.responses.create(
            model=model, input="x", previous_response_id="resp_123")),
        "reasoning": refused(lambda: client.responses.create(
            model=model, input="x", reasoning={"effort": "low"})),
        "web_search": refused(lambda: client.responses.create(
            model=model, input="x", tools=[{"type": "web_search"}])),
        "named_unconfigured": refused(lambda: client.chat.completions.create(
            model="gpt-4o", messages=msgs)),
    }


@check("langchain")
def _():
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings
    from langchain_core.tools import tool

    llm = ChatOpenAI(model=model, base_url=base_url, api_key=api_key, max_retries=0, timeout=30)

    @tool
    def get_weather(location: str) -> str:
        """Current weather for a city."""
        return "22C"

    bound = llm.bind_tools([get_weather]).invoke(ASK)
    structured = llm.with_structured_output(City).invoke("Describe Paris.")
    # OpenAIEmbeddings tokenizes with tiktoken and sends token ids.
    emb = OpenAIEmbeddings(model="local-hash-384", base_url=base_url, api_key=api_key,
                           tiktoken_model_name="text-embedding-ada-002", max_retries=0)
    return {
        "tool_calls": [{"name": c["name"], "args": c["args"]} for c in bound.tool_calls],
        "structured": structured.model_dump(),
        "embed_query": emb.embed_query("the cat sat"),
    }


print(json.dumps(out))
