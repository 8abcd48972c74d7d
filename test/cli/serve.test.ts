/**
 * `webtron serve` as a client uses it: Megatron's PUT /api and OpenAI's POST /completions over HTTP,
 * against `webtron sample` (the same text at the same seed) and against a full forward of the
 * checkpoint in this process, without the server's key/value cache (every log-probability, and the
 * greedy tokens).
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTokenizer, type Tokenizer } from '../../src/data/tokenizer.js';
import { GpuContext } from '../../src/gpu/context.js';
import { Graph } from '../../src/nn/graph.js';
import { loadCheckpointModel } from '../../src/train/checkpoint-model.js';
import { BIN, dir, TINY, train } from '../helpers/train.js';

const ctx = await GpuContext.create();
const base = dir();
const ckpt = join(base, 'ckpt');
/** A chat template in the characters of Moby-Dick, rendered by hand in the chat test. */
const CHAT = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
const servers: ChildProcess[] = [];
let url = '';
let gpt2Url = '';
let tokenizer: Tokenizer;

/** `webtron serve --load load --port 0`, once it listens: its URL. */
async function serve(load: string, extra: string[] = []): Promise<string> {
  const server = spawn('node', [BIN, 'serve', '--load', load, '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  servers.push(server);
  return new Promise<string>((done, fail) => {
    let out = '';
    server.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const found = /webtron serve: (http:\S+)/.exec(out);
      if (found) done(found[1]!);
    });
    server.on('exit', (code) => fail(new Error(`webtron serve exited ${code} before it listened`)));
  });
}

beforeAll(async () => {
  const r = await train([...TINY, '--train-iters', '30', '--global-batch-size', '4', '--save', ckpt, '--run-dir', join(base, 'run')]);
  expect(r.code, r.stderr).toBe(0);
  // GPT-2's tokenizer, whose end-of-document token has a text of its own.
  const gpt2 = ['--num-layers', '1', '--hidden-size', '16', '--num-attention-heads', '2', '--seq-length', '16', '--micro-batch-size', '2'];
  const g = await train([
    ...gpt2,
    '--train-iters',
    '1',
    '--lr',
    '1e-3',
    '--tokenizer-type',
    'GPT2BPETokenizer',
    '--eval-iters',
    '0',
    '--save',
    join(base, 'gpt2'),
  ]);
  expect(g.code, g.stderr).toBe(0);
  writeFileSync(join(base, 'chat.jinja'), CHAT);
  [url, gpt2Url] = await Promise.all([serve(ckpt, ['--chat-template', join(base, 'chat.jinja')]), serve(join(base, 'gpt2'))]);
  tokenizer = await loadTokenizer((await loadCheckpointModel(ctx, ckpt)).tokenizer);
}, 120_000);

afterAll(async () => {
  for (const server of servers)
    if (server.exitCode === null) {
      const exited = new Promise((done) => server.once('exit', done));
      process.kill(server.pid!, 'SIGTERM');
      await exited;
    }
  ctx.destroy();
  rmSync(base, { recursive: true, force: true });
});

async function call(method: string, path: string, body?: unknown, at = url): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(new URL(path, at), {
    method,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** Log-softmax over the tokenizer's tokens of every position's logits, from a full forward of `tokens` (float64). */
async function fullForward(tokens: number[]): Promise<Float64Array[]> {
  const model = await loadCheckpointModel(ctx, ckpt);
  const g = new Graph(ctx, { training: false });
  const logits = await g.read(model.gpt.forward(g, g.input(Uint32Array.from(tokens), [1, tokens.length], 'ids')).logits);
  g.release();
  model.params.destroy();
  const width = model.config.vocabSize;
  return tokens.map((_, i) => {
    const row = Float64Array.from(logits.subarray(i * width, i * width + tokenizer.vocabSize));
    const max = Math.max(...row);
    const norm = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
    return row.map((x) => x - norm);
  });
}

const argmax = (row: Float64Array) => row.indexOf(Math.max(...row));

describe('webtron serve', () => {
  it('PUT /api writes what webtron sample writes at the same seed, past the 16-position window too', async () => {
    const put = async (seed: number) => {
      const r = await call('PUT', '/api', { prompts: ['Call me '], tokens_to_generate: 40, random_seed: seed, temperature: 0.8 });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      return (r.json.text as string[])[0]!;
    };
    const sampled = execFileSync(
      'node',
      [BIN, 'sample', '--load', ckpt, '--prompt', 'Call me ', '--tokens', '40', '--seed', '5', '--temperature', '0.8'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const text = await put(5);
    expect(`${text}\n`).toBe(sampled);
    expect(Array.from(text).length).toBe('Call me '.length + 40);
    expect(await put(6)).not.toBe(text);
  });

  it("PUT /api's log-probabilities are a full forward's, and top_k 1 takes its most likely token each time", async () => {
    const prompts = ['Call me ', 'The whale'];
    const r = await call('PUT', '/api', { prompts, tokens_to_generate: 4, logprobs: true, top_k: 1 });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const { text, segments, tokens, logprobs } = r.json as {
      text: string[];
      segments: string[][];
      tokens: number[][];
      logprobs: number[][];
    };
    for (const [i, prompt] of prompts.entries()) {
      const ids = tokens[i]!;
      const n = tokenizer.encode(prompt).length;
      expect(ids.slice(0, n)).toEqual([...tokenizer.encode(prompt)]);
      expect(ids.length).toBe(n + 4);
      expect(text[i]).toBe(prompt + tokenizer.decode(ids.slice(n)));
      expect(segments[i]!.join('')).toBe(text[i]);
      const want = await fullForward(ids);
      expect(logprobs[i]!.length).toBe(ids.length - 1);
      for (let j = 1; j < ids.length; j++) expect(Math.abs(logprobs[i]![j - 1]! - want[j - 1]![ids[j]!]!), `token ${j}`).toBeLessThan(1e-4);
      for (let j = n; j < ids.length; j++) expect(ids[j], `generated token ${j}`).toBe(argmax(want[j - 1]!));
    }
  });

  it('POST /completions: echo and logprobs as evaluation harnesses ask for them, their tokenizer endpoints, stop strings, streaming, token prompts', async () => {
    // lm-evaluation-harness's log-likelihood request: the prompt echoed with every token's log-probability.
    const prompt = 'Call me Ishmael';
    const ids = [...tokenizer.encode(prompt)];
    const r = await call('POST', '/v1/completions', { prompt, max_tokens: 1, temperature: 0, logprobs: 1, echo: true, seed: 1234 });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const choice = (r.json.choices as Record<string, unknown>[])[0]!;
    const lp = choice.logprobs as {
      tokens: string[];
      token_logprobs: (number | null)[];
      top_logprobs: (Record<string, number> | null)[];
      text_offset: number[];
    };
    expect(lp.tokens.length).toBe(ids.length + 1);
    expect(choice.text).toBe(prompt + lp.tokens.at(-1));
    expect(lp.text_offset).toEqual(lp.tokens.map((_, i) => i));
    expect(lp.token_logprobs[0]).toBeNull();
    expect(lp.top_logprobs[0]).toBeNull();
    const all = [...ids, ...tokenizer.encode(lp.tokens.at(-1)!)];
    const want = await fullForward(all);
    for (let j = 1; j < all.length; j++) {
      expect(Math.abs(lp.token_logprobs[j]! - want[j - 1]![all[j]!]!), `token ${j}`).toBeLessThan(1e-4);
      // The one most likely token beside each, as the harness reads it to tell a greedy continuation.
      const [[best, value]] = Object.entries(lp.top_logprobs[j]!) as [[string, number]];
      expect(tokenizer.encode(best)[0]).toBe(argmax(want[j - 1]!));
      expect(Math.abs(value - Math.max(...want[j - 1]!))).toBeLessThan(1e-4);
    }
    expect(lp.token_logprobs.at(-1)).toBe(Object.values(lp.top_logprobs.at(-1)!)[0]);
    expect(r.json.usage).toEqual({ prompt_tokens: ids.length, completion_tokens: 1, total_tokens: ids.length + 1 });

    // The harness tokenizes with the server's tokenizer through vLLM's endpoints.
    expect((await call('POST', '/tokenize', { prompt, add_special_tokens: false })).json).toEqual({
      tokens: ids,
      count: ids.length,
      max_model_len: 16,
    });
    expect((await call('POST', '/detokenize', { tokens: ids })).json).toEqual({ prompt });
    const info = (await call('GET', '/tokenizer_info')).json;
    expect(info).toEqual({ ...info, tokenizer_class: 'CharTokenizer', vocab_size: tokenizer.vocabSize, eos_token: null });

    // Seeded text, then the same request stopped at a piece of it: the text ends before the piece.
    const seeded = async (body: Record<string, unknown>) => {
      const c = await call('POST', '/completions', { prompt: 'The whale', max_tokens: 6, seed: 7, ...body });
      expect(c.status, JSON.stringify(c.json)).toBe(200);
      return (c.json.choices as { text: string; finish_reason: string }[])[0]!;
    };
    const whole = await seeded({});
    expect(whole.finish_reason).toBe('length');
    expect(Array.from(whole.text).length).toBe(6);
    const stop = whole.text.slice(3, 5);
    const stopped = await seeded({ stop: [stop] });
    expect(stopped).toEqual({ ...stopped, text: whole.text.slice(0, whole.text.indexOf(stop)), finish_reason: 'stop' });
    expect(stopped.text.length).toBeLessThan(whole.text.length);
    // Streamed as server-sent events, the pieces of each choice join into its text, a stop string
    // held back until it is whole or ruled out; the last event of each gives its finish_reason.
    const ask = { prompt: ['The whale', 'Call me'], max_tokens: 6, seed: 7, echo: true, stop: [stop] };
    const once = (await call('POST', '/completions', ask)).json.choices as { index: number; text: string; finish_reason: string }[];
    const res = await fetch(new URL('/completions', url), { method: 'POST', body: JSON.stringify({ ...ask, stream: true }) });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = (await res.text()).split('\n\n').filter(Boolean);
    expect(events.at(-1)).toBe('data: [DONE]');
    const pieces = events
      .slice(0, -1)
      .map((e) => (JSON.parse(e.replace(/^data: /, '')) as { choices: (typeof once)[number][] }).choices[0]!);
    for (const want of once) {
      const mine = pieces.filter((p) => p.index === want.index);
      expect(mine.map((p) => p.text).join('')).toBe(want.text);
      expect(mine.at(-1)!.finish_reason).toBe(want.finish_reason);
      expect(mine.slice(0, -1).every((p) => p.finish_reason === null)).toBe(true);
    }
    // The prompt as token ids gives the text of the prompt as text.
    expect((await seeded({ prompt: [...tokenizer.encode('The whale')] })).text).toBe(whole.text);
  });

  it("bad requests are HTTP 400 with Megatron's messages, and the server goes on", async () => {
    const refused = async (method: string, path: string, body: unknown, status: number, message: RegExp) => {
      const r = await call(method, path, body);
      expect(r.status, JSON.stringify(r.json)).toBe(status);
      expect(r.json.message).toMatch(message);
    };
    await refused('PUT', '/api', { prompts: 'Call me' }, 400, /^prompts is not a list of strings$/);
    await refused('PUT', '/api', { prompts: ['Call'], top_k: 2, top_p: 0.5 }, 400, /^cannot set both top-k and top-p samplings\.$/);
    await refused('PUT', '/api', { prompts: [''] }, 400, /^Empty prompts require add_BOS=true$/);
    await refused('PUT', '/api', { prompts: ['Call'], tokens_to_generate: 0 }, 400, /tokens_to_generate=0 implies logprobs/);
    await refused('PUT', '/api', { prompts: ['日本'] }, 400, /日.*not in the vocabulary/);
    await refused('PUT', '/api', 'not json', 400, /the body is not JSON/);
    // Fields Megatron's server checks though its engine no longer reads them.
    await refused('PUT', '/api', { prompts: ['Call'], top_p_decay: 0.5 }, 400, /^top_p_decay cannot be set without top_p$/);
    await refused(
      'PUT',
      '/api',
      { prompts: ['Call'], top_p: 0.5, top_p_bound: 0.9 },
      400,
      /^top_p_bound must be greater than 0 and less than top_p$/,
    );
    expect(
      (await call('PUT', '/api', { prompts: ['Call'], tokens_to_generate: 1, top_p: 0.5, top_p_decay: 0.5, length_penalty: 1.5 })).status,
    ).toBe(200);
    await refused('POST', '/api', { prompts: ['Call'] }, 405, /\/api takes PUT, not POST/);
    await refused('POST', '/completions', { prompt: 'Call', n: 2 }, 400, /n > 1 not supported/);
    await refused('POST', '/completions', { prompt: [1, 500] }, 400, /prompt token 500 is not in the vocabulary of 89 tokens/);
    await refused('POST', '/nowhere', {}, 404, /no \/nowhere here/);
    // A prompt's own log-probabilities need it whole in the window of 16 positions.
    await refused(
      'PUT',
      '/api',
      { prompts: ['x'.repeat(17)], logprobs: true, tokens_to_generate: 1 },
      400,
      /prompt of 17 tokens .* window of 16/,
    );
    expect(await call('GET', '/health')).toEqual({ status: 200, json: { status: 'ok' } });
  });

  it('POST /chat/completions: the messages through the chat template, then the completion of what it writes; streamed as deltas', async () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Call me' },
    ];
    const rendered = 'system: Be brief.\nuser: Call me\nassistant:';
    const completed = await call('POST', '/v1/completions', { prompt: rendered, max_tokens: 6, seed: 7 });
    const want = (completed.json.choices as { text: string; finish_reason: string }[])[0]!;
    const chat = await call('POST', '/v1/chat/completions', { messages, max_tokens: 6, seed: 7 });
    expect(chat.status, JSON.stringify(chat.json)).toBe(200);
    expect(chat.json.object).toBe('chat.completion');
    const choice = (chat.json.choices as { message: { role: string; content: string }; finish_reason: string }[])[0]!;
    expect(choice.message).toEqual({ role: 'assistant', content: want.text });
    expect(choice.finish_reason).toBe(want.finish_reason);
    expect(chat.json.usage).toEqual({ prompt_tokens: rendered.length, completion_tokens: 6, total_tokens: rendered.length + 6 });
    // Content as OpenAI's list of text parts reads as the parts joined.
    const parts = [
      messages[0],
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Call ' },
          { type: 'text', text: 'me' },
        ],
      },
    ];
    const again = await call('POST', '/chat/completions', { messages: parts, max_completion_tokens: 6, seed: 7 });
    expect((again.json.choices as (typeof choice)[])[0]!.message.content).toBe(want.text);
    // Streamed: a first delta with the role, the content in pieces, a last delta with the finish_reason.
    const res = await fetch(new URL('/v1/chat/completions', url), {
      method: 'POST',
      body: JSON.stringify({ messages, max_tokens: 6, seed: 7, stream: true }),
    });
    const events = (await res.text()).split('\n\n').filter(Boolean);
    expect(events.at(-1)).toBe('data: [DONE]');
    const chunks = events.slice(0, -1).map(
      (e) =>
        JSON.parse(e.replace(/^data: /, '')) as {
          object: string;
          choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[];
        },
    );
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks.map((c) => c.choices[0]!.delta.content ?? '').join('')).toBe(want.text);
    expect(chunks.at(-1)!.choices[0]).toEqual({ index: 0, delta: {}, logprobs: null, finish_reason: want.finish_reason });
    // Log-probabilities in the chat's format: each generated token's, with the most likely beside it,
    // as /completions gives them for the template's text.
    const greedy = { max_tokens: 4, temperature: 0 };
    const plain = await call('POST', '/completions', { prompt: rendered, ...greedy, logprobs: 2 });
    const legacy = (
      plain.json.choices as { logprobs: { tokens: string[]; token_logprobs: number[]; top_logprobs: Record<string, number>[] } }[]
    )[0]!.logprobs;
    const scored = await call('POST', '/v1/chat/completions', { messages, ...greedy, logprobs: true, top_logprobs: 2 });
    expect(scored.status, JSON.stringify(scored.json)).toBe(200);
    const content = (
      scored.json.choices as {
        logprobs: { content: { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number }[] }[] };
      }[]
    )[0]!.logprobs.content;
    expect(content.map((c) => c.token)).toEqual(legacy.tokens);
    expect(content.map((c) => c.logprob)).toEqual(legacy.token_logprobs);
    for (const [j, c] of content.entries()) {
      expect(c.bytes).toEqual([...Buffer.from(c.token)]);
      expect(Object.fromEntries(c.top_logprobs.map((t) => [t.token, t.logprob]))).toEqual(legacy.top_logprobs[j]);
      expect(c.top_logprobs[0]!.token).toBe(c.token); // greedy: the most likely
    }
    // A model without a chat template says so; a template that cannot be read stops the server at start.
    const none = await call('POST', '/v1/chat/completions', { messages }, gpt2Url);
    expect(none.status).toBe(400);
    expect(none.json.message).toMatch(/has no chat template: serve it with --chat-template FILE/);
    writeFileSync(join(base, 'broken.jinja'), '{% for m in messages %}');
    for (const [file, says] of [
      [join(base, 'nowhere.jinja'), /--chat-template: cannot read .*nowhere\.jinja: ENOENT/],
      [join(base, 'broken.jinja'), /broken\.jinja: not a chat template Jinja can read/],
    ] as const) {
      const r = spawnSync('node', [BIN, 'serve', '--load', ckpt, '--port', '0', '--chat-template', file], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(says);
    }
  });

  it("GPT-2's <|endoftext|> in a prompt is its one token, and generation stops after stop_token", async () => {
    const gpt2 = await loadTokenizer({ type: 'GPT2BPETokenizer' });
    const at = gpt2Url;
    expect((await call('GET', '/tokenizer_info', undefined, at)).json.eos_token).toBe('<|endoftext|>');
    const text = 'Call me<|endoftext|>Ishmael';
    const want = [...gpt2.encode('Call me'), 50256, ...gpt2.encode('Ishmael')];
    expect((await call('POST', '/tokenize', { prompt: text }, at)).json.tokens).toEqual(want);
    // The first greedy token, then the same request told to stop on it: one token only.
    const put = async (extra: Record<string, unknown>) => {
      const r = await call('PUT', '/api', { prompts: [text], tokens_to_generate: 5, top_k: 1, ...extra }, at);
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      return (r.json.tokens as number[][])[0]!;
    };
    const free = await put({ stop_token: -1 });
    expect(free.slice(0, want.length)).toEqual(want);
    expect(free.length).toBe(want.length + 5);
    expect(await put({ stop_token: free[want.length] })).toEqual(free.slice(0, want.length + 1));
  });
});
