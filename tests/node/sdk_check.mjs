// Usage: node sdk_check.mjs BASE_URL KEY MODEL — prints one JSON line with what the SDK returned.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [{ role: "user", content: "What's the weather in Paris?" }];

const plain = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });

let streamed = "";
let finish = null;
const stream = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, stream: true });
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
  finish = chunk.choices[0]?.finish_reason ?? finish;
}

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 40 } },
      required: ["city"],
    },
  },
};
const called = await client.chat.completions.create({
  model, messages, tools: [weather], tool_choice: "required", max_tokens: 60, temperature: 0,
});
const call = called.choices[0].message.tool_calls[0];

console.log(JSON.stringify({
  content: plain.choices[0].message.content,
  usage: plain.usage,
  streamed,
  finish,
  tool: { name: call.function.name, arguments: JSON.parse(call.function.arguments), finish: called.choices[0].finish_reason },
}));
