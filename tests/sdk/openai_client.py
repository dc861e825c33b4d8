"""Drives Switchboard with the official OpenAI Python SDK, unmodified.

Usage: openai_client.py BASE_URL API_KEY MODEL
Prints one JSON object describing what the SDK saw; the Rust test asserts on it.
"""
import json
import sys

import openai

base_url, api_key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
out = {}

# Streaming, with usage in the last chunk.
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    stream=True,
    stream_options={"include_usage": True},
    temperature=0.2,
    max_tokens=50,
)
text, chunks, finish, usage = "", 0, None, None
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
out["stream"] = {"text": text, "chunks": chunks, "finish_reason": finish, "usage": usage}

# Non-streaming.
resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello"}])
out["plain"] = {
    "text": resp.choices[0].message.content,
    "finish_reason": resp.choices[0].finish_reason,
    "usage": resp.usage.model_dump(),
    "object": resp.object,
}

out["models"] = [m.id for m in client.models.list()]

emb = client.embeddings.create(model="local-hash-384", input=["hello world", "goodbye"])
out["embeddings"] = {"count": len(emb.data), "dims": len(emb.data[0].embedding)}

# Errors come back as the SDK's own exceptions.
try:
    openai.OpenAI(base_url=base_url, api_key="sk-sb-wrong", max_retries=0).models.list()
    out["bad_key"] = "accepted"
except openai.AuthenticationError as e:
    out["bad_key"] = e.status_code
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    out["bad_model"] = "accepted"
except openai.BadRequestError as e:
    out["bad_model"] = e.body.get("param") if isinstance(e.body, dict) else str(e.body)

print(json.dumps(out))
