// Drives Switchboard's /v1 with the official `openai` Node SDK and the Vercel
// AI SDK (`ai` + `@ai-sdk/openai`), unmodified.
//
// Usage: node sdk_check.mjs BASE_URL API_KEY MODEL
// Prints one JSON object of what the clients saw; tests/api/sdk_compat.rs
// asserts on it (values, not only shapes). Each check is caught on its own so
// one failure is reported beside the others.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, streamText } from "ai";
import { z } from "zod";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
const out = {};

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city",
    parameters: {
      type: "object",
      properties: { location: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
      required: ["location", "unit"],
      additionalProperties: false,
    },
  },
};
const ASK = "What is the weather in Paris? Use get_weather.";

async function check(name, f) {
  try {
    out[name] = await f();
  } catch (e) {
    out[name] = { exception: e?.constructor?.name, detail: String(e?.message ?? e).slice(0, 500), stack: String(e?.stack ?? "").slice(0, 800) };
  }
}

await check("embeddings", async () => {
  // The SDK asks for base64 by default and decodes it itself.
  const res = await client.embeddings.create({ model: "local-hash-384", input: ["the cat sat", "stock prices"] });
  const floats = await client.embeddings.create({ model: "local-hash-384", input: "the cat sat", encoding_format: "float" });
  return { vectors: res.data.map((d) => Array.from(d.embedding)), float: floats.data[0].embedding, usage: res.usage.prompt_tokens };
});

await check("tools", async () => {
  const first = await client.chat.completions.create({ model, messages: [{ role: "user", content: ASK }], tools: [WEATHER] });
  const message = first.choices[0].message;
  const call = message.tool_calls[0];
  const second = await client.chat.completions.create({
    model,
    tools: [WEATHER],
    messages: [{ role: "user", content: ASK }, message, { role: "tool", tool_call_id: call.id, content: "22C and sunny" }],
  });
  // Streamed, assembled by the SDK's own stream helper.
  const stream = client.chat.completions.stream({ model, messages: [{ role: "user", content: ASK }], tools: [WEATHER], tool_choice: "required" });
  let deltas = 0;
  stream.on("chunk", (c) => { deltas += (c.choices[0]?.delta?.tool_calls ?? []).length; });
  const done = await stream.finalChatCompletion();
  const streamed = done.choices[0];
  return {
    finish_reason: first.choices[0].finish_reason,
    name: call.function.name,
    arguments: JSON.parse(call.function.arguments),
    answer: second.choices[0].message.content,
    stream_finish: streamed.finish_reason,
    stream_name: streamed.message.tool_calls?.[0]?.function?.name,
    stream_arguments: JSON.parse(streamed.message.tool_calls?.[0]?.function?.arguments ?? "null"),
    stream_id_matches: streamed.message.tool_calls?.[0]?.id === call.id,
    stream_deltas: deltas,
  };
});

const City = z.object({ name: z.string(), population: z.number().int(), capital: z.boolean() });

await check("parse", async () => {
  const parsed = await client.chat.completions.parse({
    model,
    messages: [{ role: "user", content: "Describe Paris as JSON." }],
    response_format: zodResponseFormat(City, "city"),
  });
  return parsed.choices[0].message.parsed;
});

await check("refused", async () => {
  try {
    await client.chat.completions.create({ model, messages: [{ role: "user", content: "x" }], logprobs: true });
    return "accepted";
  } catch (e) {
    return { status: e.status, param: e.param, code: e.code };
  }
});

const provider = createOpenAI({ baseURL, apiKey });

await check("ai_stream", async () => {
  // openai("model") speaks the Responses API.
  const result = streamText({ model: provider(model), prompt: "Say hello", maxRetries: 0 });
  let text = "";
  let parts = 0;
  for await (const t of result.textStream) {
    text += t;
    parts += 1;
  }
  return { text, parts, finish: await result.finishReason, usage: await result.usage };
});

await check("ai_object", async () => {
  const { object } = await generateObject({ model: provider(model), schema: City, prompt: "Describe Paris.", maxRetries: 0 });
  return object;
});

console.log(JSON.stringify(out));
