// Drives the npm "openai" package against the fake whose base URL is
// argv[2] and prints what it parsed as one JSON object. Run by
// TestNodeOpenAI when FAKEOPENAI_NODE_MODULES names a node_modules holding
// "openai".
const OpenAI = require('openai');

async function main() {
  const client = new OpenAI({
    apiKey: process.argv[3], baseURL: process.argv[2], maxRetries: 0,
  });
  const messages = [{ role: 'user', content: 'say hello please' }];
  const out = {};

  const chat = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });
  out.chat = { text: chat.choices[0].message.content, usage: chat.usage };

  const stream = await client.chat.completions.create({
    model: 'gpt-4o-mini', messages, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length > 0) text += chunk.choices[0].delta.content || '';
    if (chunk.usage) usage = chunk.usage;
  }
  out.chatStream = { text, usage };

  const emb = await client.embeddings.create({
    model: 'text-embedding-3-small', input: ['a b', 'c'],
  });
  out.embeddings = { count: emb.data.length, first: emb.data[1].embedding[0], usage: emb.usage };

  const resp = await client.responses.create({ model: 'gpt-4o-mini', input: 'hi there' });
  out.responses = { text: resp.output_text, usage: resp.usage };

  const rstream = await client.responses.create({
    model: 'gpt-4o-mini', input: 'hi there', stream: true,
  });
  let rtext = '';
  let rusage = null;
  for await (const ev of rstream) {
    if (ev.type === 'response.output_text.delta') rtext += ev.delta;
    if (ev.type === 'response.completed') rusage = ev.response.usage;
  }
  out.responsesStream = { text: rtext, usage: rusage };

  try {
    await client.chat.completions.create({ model: 'gpt-4o-mini', messages }, {
      headers: { Authorization: 'Bearer sk-unknown-0123456789' },
    });
  } catch (e) {
    out.error = { status: e.status, code: e.code, type: e.type };
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });
