/**
 * `webtron serve --load DIR`: Megatron-LM's text generation server (tools/run_text_generation_server.py)
 * for any model `webtron sample` reads, on this machine's GPU, one request at a time:
 *
 * - `PUT /api`: Megatron's own request (`prompts`, `tokens_to_generate`, `temperature`, `top_k`,
 *   `top_p`, `random_seed`, `logprobs`, `add_BOS`, `stop_on_eol`, `stop_on_double_eol`,
 *   `stop_token`) and answer (`text`, `segments`, `tokens`, `logprobs`), with its defaults and its
 *   refusals;
 * - `POST /completions` (and `/v1/completions`): OpenAI's legacy completions, as Megatron's server
 *   mimics them, with `echo` and `logprobs` as evaluation harnesses use them (the log-probability of
 *   every prompt token, and the most likely tokens beside each), and `stream` (server-sent events);
 * - `POST /chat/completions` (and `/v1/chat/completions`): OpenAI's chat, the messages through the
 *   model's chat template (./chat-template.ts), then a completion of what it writes;
 * - vLLM's tokenizer endpoints (`GET /tokenizer_info`, `POST /tokenize`, `POST /detokenize`), through
 *   which lm-evaluation-harness tokenizes with the server's own tokenizer;
 * - `GET /health` and `GET /v1/models`.
 *
 * Log-probabilities are the model's own (temperature 1, over the tokenizer's tokens), before any
 * sampling filter. The context is a window of --inference-max-seq-length positions (at most the
 * model's) as in `webtron sample`: a longer prompt keeps its newest tokens, and once generation fills
 * the window its newest half is run again; a prompt's own log-probabilities need it whole in the
 * window. Bad requests are HTTP 400 with `{"message": ...}`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { basename, resolve } from 'node:path';
import { hostPort } from '../collectives/transport.js';
import { splitmix32 } from '../data/samples.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { positionLimit } from '../nn/decode.js';
import { type Command, listenFlag, portFlag, untilStopped } from './command.js';
import { FlagError, GPU_FLAGS, type FlagSpec } from './flags.js';
import { type ChatTemplate, chatTemplateOf } from './chat-template.js';
import { generate, logProbs, openSampledModel, type SampledModel } from './generate.js';
import { SAMPLE_FLAGS } from './sample.js';
import { isHfFolder } from '../hf/model.js';

export const SERVE_FLAGS: Record<string, FlagSpec> = {
  load: SAMPLE_FLAGS.load!,
  onnx: SAMPLE_FLAGS.onnx!,
  host: {
    kind: 'string',
    default: '127.0.0.1',
    help: "the address to listen on (127.0.0.1: this machine only; 0.0.0.0, Megatron's, serves the network: there is no authentication)",
  },
  port: { kind: 'int', default: 5000, help: "the port (Megatron's default; 0: any free one)" },
  seed: { kind: 'int', default: 1234, help: 'seed of the sampling for requests that give none (random_seed, seed)' },
  'chat-template': {
    kind: 'string',
    help: "a Jinja chat template for /chat/completions (default: a Hugging Face folder's chat_template.jinja, or its tokenizer_config.json's chat_template)",
  },
  'inference-max-seq-length': SAMPLE_FLAGS['inference-max-seq-length']!,
};

/** A request the server refuses: HTTP 400 with this message. */
class RequestError extends Error {}

/** One prompt's tokens, what to generate after them, and how. */
interface Job {
  context: number[];
  tokens: number;
  temperature: number;
  topK: number;
  topP: number;
  random: () => number;
  /** The log-probability of every prompt token but the first. */
  promptLogprobs: boolean;
  /** The log-probability of each token (of the prompt too with promptLogprobs), and this many most likely tokens beside each (-1: none). */
  top: number;
  /** After each new token (the ones so far given): whether to stop. */
  stop: (generated: readonly number[]) => boolean;
}

interface Done {
  /** Prompt and generated tokens. */
  tokens: number[];
  generated: number;
  /** For prompt tokens 1.. (the first has no context): log-probabilities, and the most likely tokens with theirs. */
  prompt: { logprobs: number[]; top: [number, number][][] };
  /** For the generated tokens. */
  logprobs: number[];
  top: [number, number][][];
  stopped: boolean;
}

/** What the server holds: the model, its tokenizer and window, and the generator of unseeded requests. */
interface Served {
  model: SampledModel;
  tokenizer: Tokenizer;
  window: number;
  random: () => number;
  name: string;
  /** The end-of-document token, read as one token where its text is in a prompt. */
  special: { id: number; text: string } | null;
  /** The chat template and the special tokens it is given, where the model has one. */
  chat: ChatTemplate | null;
  /** Tokens the request being answered has run through the model: prompts, and generated. */
  counted: { prompt: number; generated: number };
}

/** Run one job on the model: prefill (every position's logits where log-probabilities are asked), then generate. */
async function run(s: Served, job: Job): Promise<Done> {
  const { context } = job;
  if (job.promptLogprobs && context.length > s.window)
    throw new RequestError(
      `the log-probabilities of a prompt of ${context.length} tokens need it whole in the window of ${s.window} positions (--inference-max-seq-length, at most the model's positions): give a shorter prompt`,
    );
  const decoder = s.model.decoder(Math.max(1, Math.min(s.window, context.length + job.tokens)));
  try {
    const vocab = s.tokenizer.vocabSize;
    const done: Done = { tokens: [...context], generated: 0, prompt: { logprobs: [], top: [] }, logprobs: [], top: [], stopped: false };
    let logits: Float32Array;
    if (job.promptLogprobs) {
      const width = s.model.config.vocabSize;
      const rows = await decoder.appendEvery(context);
      for (let i = 1; i < context.length; i++) {
        const { logprob, top } = logProbs(rows.subarray((i - 1) * width, i * width), vocab, context[i]!, Math.max(0, job.top));
        done.prompt.logprobs.push(logprob);
        done.prompt.top.push(top);
      }
      logits = rows.subarray((context.length - 1) * width);
    } else logits = await decoder.append(context.slice(-decoder.capacity));
    const generated = await generate(decoder, done.tokens, logits, {
      tokens: job.tokens,
      temperature: job.temperature,
      topK: job.topK,
      topP: job.topP,
      random: job.random,
      vocab,
      logprobs: job.top,
      onToken: () => job.stop(done.tokens.slice(context.length)),
    });
    done.generated = generated.tokens.length;
    s.counted.prompt += context.length;
    s.counted.generated += done.generated;
    done.logprobs = generated.logprobs;
    done.top = generated.top;
    done.stopped = generated.stopped;
    return done;
  } finally {
    decoder.destroy();
  }
}

/** A JSON body's field checked by `ok`, or `fallback` where it is absent; `message` where it fails. */
function field<T>(body: Record<string, unknown>, name: string, fallback: T, ok: (v: unknown) => boolean, message: string): T {
  if (!(name in body) || body[name] === null) return fallback;
  if (!ok(body[name])) throw new RequestError(message);
  return body[name] as T;
}

const isInt = (v: unknown): boolean => Number.isInteger(v);
const isNumber = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
const isBool = (v: unknown): boolean => typeof v === 'boolean';

/**
 * The tokens of a text prompt, or the tokenizer's complaint as a bad request. The end-of-document
 * token's text (GPT-2's `<|endoftext|>`) is that token, as Hugging Face tokenizers read special
 * tokens in text, so that `/tokenize` gives a harness the id it stops on.
 */
function encode(s: Served, text: string): number[] {
  try {
    const special = s.special;
    if (special === null) return [...s.tokenizer.encode(text)];
    return text.split(special.text).flatMap((piece, i) => [...(i > 0 ? [special.id] : []), ...s.tokenizer.encode(piece)]);
  } catch (error) {
    throw new RequestError(`prompt ${JSON.stringify(text.slice(0, 40))}: ${(error as Error).message}`);
  }
}

/** The end-of-document token and its text, where the tokenizer reads that text as other tokens (else null). */
function specialToken(tokenizer: Tokenizer): { id: number; text: string } | null {
  const id = tokenizer.eod;
  if (id === null) return null;
  const text = tokenizer.decode([id]);
  if (text.length === 0 || text.includes('\uFFFD')) return null;
  try {
    const plain = tokenizer.encode(text);
    return plain.length === 1 && plain[0] === id ? null : { id, text };
  } catch {
    return { id, text };
  }
}

/**
 * Fields of Megatron's older generation that its server still checks but its engine no longer
 * reads (top_p_decay, top_p_bound, prevent_newline_after_colon, length_penalty): checked as it
 * checks them, and, as there, without effect.
 */
function legacyFields(body: Record<string, unknown>, topP: number): void {
  const value = (name: string) => body[name] as number;
  if ('top_p_decay' in body) {
    if (!isNumber(body.top_p_decay)) throw new RequestError('top_p_decay must be a positive float less than or equal to 1.0');
    if (topP === 0) throw new RequestError('top_p_decay cannot be set without top_p');
    if (!(value('top_p_decay') >= 0 && value('top_p_decay') <= 1)) throw new RequestError('top_p_decay must be less than or equal to 1.0');
  }
  if ('top_p_bound' in body) {
    if (!isNumber(body.top_p_bound)) throw new RequestError('top_p_bound must be a positive float less than or equal to top_p');
    if (topP === 0) throw new RequestError('top_p_bound cannot be set without top_p');
    if (!(value('top_p_bound') > 0 && value('top_p_bound') <= topP))
      throw new RequestError('top_p_bound must be greater than 0 and less than top_p');
  }
  if ('prevent_newline_after_colon' in body && !isBool(body.prevent_newline_after_colon))
    throw new RequestError('prevent_newline_after_colon must be a boolean value');
  if ('length_penalty' in body && !isNumber(body.length_penalty)) throw new RequestError('length_penalty must be a float');
}

/** Megatron's PUT /api: its fields, defaults and refusals (megatron/core/inference/text_generation_server). */
async function megatronApi(s: Served, body: Record<string, unknown>): Promise<unknown> {
  if (!('prompts' in body)) throw new RequestError('prompts argument required');
  if ('max_len' in body) throw new RequestError('max_len is no longer used.  Replace with tokens_to_generate');
  if ('sentences' in body) throw new RequestError('sentences is no longer used.  Replace with prompts');
  if ('beam_width' in body) throw new RequestError('Beam search is no longer supported.');
  const prompts = body.prompts;
  if (!Array.isArray(prompts) || !prompts.every((p) => typeof p === 'string')) throw new RequestError('prompts is not a list of strings');
  if (prompts.length === 0) throw new RequestError('prompts is empty');
  if (prompts.length > 128) throw new RequestError('Maximum number of prompts is 128');
  const tokens = field<number>(
    body,
    'tokens_to_generate',
    64,
    (v) => isInt(v) && (v as number) >= 0,
    'tokens_to_generate must be an integer greater than or equal to 0',
  );
  const logprobs = field<boolean>(body, 'logprobs', false, isBool, 'logprobs must be a boolean value');
  if (tokens === 0 && !logprobs) throw new RequestError('tokens_to_generate=0 implies logprobs should be True');
  const temperature = field<number>(
    body,
    'temperature',
    1.0,
    (v) => isNumber(v) && (v as number) > 0 && (v as number) <= 100,
    'temperature must be a positive number less than or equal to 100.0',
  );
  const topK = field<number>(
    body,
    'top_k',
    0,
    (v) => isInt(v) && (v as number) >= 0 && (v as number) <= 1000,
    'top_k must be equal to or greater than 0 and less than or equal to 1000',
  );
  const topP = field<number>(
    body,
    'top_p',
    0,
    (v) => isNumber(v) && (v as number) >= 0 && (v as number) <= 1,
    'top_p must be less than or equal to 1.0',
  );
  if (topP > 0 && topK > 0) throw new RequestError('cannot set both top-k and top-p samplings.');
  const addBos = field<boolean>(body, 'add_BOS', false, isBool, 'add_BOS must be a boolean value');
  if (prompts.some((p) => p.length === 0) && !addBos) throw new RequestError('Empty prompts require add_BOS=true');
  const eol = field<boolean>(body, 'stop_on_eol', false, isBool, 'stop_on_eol must be a boolean value');
  const doubleEol = field<boolean>(body, 'stop_on_double_eol', false, isBool, 'stop_on_double_eol must be a boolean value');
  const seed = field<number>(body, 'random_seed', -1, (v) => isInt(v) && (v as number) >= 0, 'random_seed must be a positive integer');
  const eod = s.tokenizer.eod;
  const stopToken = field<number | null>(body, 'stop_token', eod, isInt, 'stop_token must be an integer');
  legacyFields(body, topP);
  if (addBos && eod === null)
    throw new RequestError(
      `add_BOS puts the end-of-document token first, and this model's ${s.tokenizer.type} has none: leave add_BOS out`,
    );
  const random = seed >= 0 ? splitmix32(seed) : s.random;
  const stop = (generated: readonly number[]): boolean => {
    if (generated.at(-1) === stopToken) return true;
    if (!eol && !doubleEol) return false;
    const text = s.tokenizer.decode(generated);
    return eol ? text.includes('\n') : text.includes('\n\n');
  };
  const out = { text: [] as string[], segments: [] as string[][], tokens: [] as number[][], logprobs: [] as number[][] };
  for (const prompt of prompts as string[]) {
    const context = [...(addBos ? [eod!] : []), ...encode(s, prompt)];
    const done = await run(s, { context, tokens, temperature, topK, topP, random, promptLogprobs: logprobs, top: logprobs ? 0 : -1, stop });
    out.text.push(prompt + s.tokenizer.decode(done.tokens.slice(context.length)));
    out.segments.push(done.tokens.map((t) => s.tokenizer.decode([t])));
    out.tokens.push(done.tokens);
    out.logprobs.push([...done.prompt.logprobs, ...done.logprobs]);
  }
  return logprobs ? out : { text: out.text, segments: out.segments, tokens: out.tokens };
}

/** A completions prompt: text, texts, tokens or lists of tokens (OpenAI's four forms). */
function completionPrompts(s: Served, prompt: unknown): { text: string; context: number[] }[] {
  const ids = (list: unknown[]): number[] => {
    for (const t of list)
      if (!isInt(t) || (t as number) < 0 || (t as number) >= s.tokenizer.vocabSize)
        throw new RequestError(`prompt token ${JSON.stringify(t)} is not in the vocabulary of ${s.tokenizer.vocabSize} tokens`);
    return list as number[];
  };
  const start = (context: number[], what: string): number[] => {
    if (context.length > 0) return context;
    if (s.tokenizer.eod === null)
      throw new RequestError(
        `${what} is empty, and this model's ${s.tokenizer.type} has no end-of-document token to start from: give a prompt`,
      );
    return [s.tokenizer.eod];
  };
  const text = (p: string) => ({ text: p, context: start(encode(s, p), 'prompt') });
  const tokens = (p: unknown[]) => ({ text: s.tokenizer.decode(ids(p)), context: start(ids(p), 'a prompt of tokens') });
  if (typeof prompt === 'string') return [text(prompt)];
  if (Array.isArray(prompt) && prompt.length > 0) {
    if (prompt.every((p) => typeof p === 'string')) return prompt.map(text);
    if (prompt.every(isInt)) return [tokens(prompt)];
    if (prompt.every((p) => Array.isArray(p))) return prompt.map((p) => tokens(p as unknown[]));
  }
  throw new RequestError('prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids');
}

/** A completions request, checked: what to generate and how. */
interface CompletionAsk {
  tokens: number;
  temperature: number;
  topK: number;
  topP: number;
  echo: boolean;
  /** The most likely tokens to give beside each token's log-probability (-1: no log-probabilities). */
  logprobs: number;
  stopTexts: string[];
  random: () => number;
  stream: boolean;
}

/** OpenAI's completions fields, checked as Megatron's server checks them. */
function completionAsk(s: Served, body: Record<string, unknown>): CompletionAsk {
  if (!('prompt' in body)) throw new RequestError('prompt argument required');
  const stream = field<boolean>(body, 'stream', false, isBool, 'stream must be a boolean value');
  if (field<number>(body, 'n', 1, isInt, 'n must be an integer') > 1) throw new RequestError('n > 1 not supported');
  if (field<number>(body, 'best_of', 1, isInt, 'best_of must be an integer') > 1) throw new RequestError('best_of > 1 not supported');
  const tokens = field<number>(
    body,
    'max_tokens',
    16,
    (v) => isInt(v) && (v as number) >= 0,
    'max_tokens must be an integer greater than or equal to 0',
  );
  const temperature = field<number>(
    body,
    'temperature',
    1.0,
    (v) => isNumber(v) && (v as number) >= 0 && (v as number) <= 100,
    'temperature must be a number from 0 to 100',
  );
  const topK = field<number>(
    body,
    'top_k',
    0,
    (v) => isInt(v) && (v as number) >= 0,
    'top_k must be an integer greater than or equal to 0',
  );
  let topP = field<number>(
    body,
    'top_p',
    1.0,
    (v) => isNumber(v) && (v as number) >= 0 && (v as number) <= 1,
    'top_p must be a number from 0 to 1',
  );
  if (topP === 1) topP = 0;
  if (topP > 0 && topK > 0) throw new RequestError('cannot set both top_k and top_p');
  const echo = field<boolean>(body, 'echo', false, isBool, 'echo must be a boolean value');
  if (!echo && tokens === 0) throw new RequestError('echo=False not supported when max_tokens == 0');
  const logprobs = field<number>(
    body,
    'logprobs',
    -1,
    (v) => isInt(v) && (v as number) >= 0 && (v as number) <= 20,
    'logprobs must be an integer from 0 to 20',
  );
  const seed = field<number>(body, 'seed', -1, isInt, 'seed must be an integer');
  const stops = field<unknown>(
    body,
    'stop',
    [],
    (v) => typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string')),
    'stop must be a string or a list of strings',
  );
  const stopTexts = (typeof stops === 'string' ? [stops] : (stops as string[])).filter((x) => x.length > 0);
  if (stream && logprobs >= 0) throw new RequestError('logprobs are not streamed: leave stream out to get them');
  const random = seed >= 0 ? splitmix32(seed >>> 0) : s.random;
  return { tokens, temperature, topK, topP, echo, logprobs, stopTexts, random, stream };
}

/**
 * One prompt's completion. With `emit`, its text goes out as it grows: all of it that neither a stop
 * string nor a character still unfinished can change (the last stop's length less one, and any
 * trailing U+FFFD, are held back).
 */
async function completionChoice(s: Served, ask: CompletionAsk, prompt: { text: string; context: number[] }, emit?: (text: string) => void) {
  const n = prompt.context.length;
  const eod = s.tokenizer.eod;
  const stopAt = (text: string) => Math.min(...ask.stopTexts.map((t) => text.indexOf(t)).filter((i) => i >= 0), text.length);
  const hold = Math.max(0, ...ask.stopTexts.map((t) => t.length - 1));
  let sent = 0;
  const flush = (text: string, final: boolean) => {
    let upto = final ? text.length : text.length - hold;
    if (!final) while (upto > sent && text[upto - 1] === '\uFFFD') upto--;
    if (emit && upto > sent) emit(text.slice(sent, upto));
    sent = Math.max(sent, upto);
  };
  if (ask.echo) emit?.(prompt.text);
  const stop = (generated: readonly number[]) => {
    if (generated.at(-1) === eod) return true;
    if (!emit && ask.stopTexts.length === 0) return false;
    const text = s.tokenizer.decode(generated);
    const cut = stopAt(text);
    flush(text.slice(0, cut), false);
    return cut < text.length;
  };
  const done = await run(s, {
    context: prompt.context,
    tokens: ask.tokens,
    temperature: ask.temperature,
    topK: ask.topK,
    topP: ask.topP,
    random: ask.random,
    promptLogprobs: ask.echo && ask.logprobs >= 0,
    top: ask.logprobs,
    stop,
  });
  let generated = done.tokens.slice(n);
  if (generated.at(-1) === eod) generated = generated.slice(0, -1);
  const full = s.tokenizer.decode(generated);
  const cut = stopAt(full);
  const text = full.slice(0, cut);
  flush(text, true);
  // The generated tokens that begin before the cut (all of them where nothing was cut).
  let kept = generated.length;
  if (cut < full.length) for (kept = 0; kept < generated.length && s.tokenizer.decode(generated.slice(0, kept)).length < cut; ) kept++;
  return {
    text: ask.echo ? prompt.text + text : text,
    logprobs: ask.logprobs >= 0 ? completionLogprobs(s, prompt, done, kept, ask.echo) : null,
    finish_reason: done.stopped ? 'stop' : 'length',
    usage: { prompt: n, completion: done.generated },
    // The kept generated tokens with their log-probabilities, for the chat's own format.
    chosen: ask.logprobs >= 0 ? generated.slice(0, kept).map((id, j) => ({ id, logprob: done.logprobs[j]!, top: done.top[j]! })) : [],
  };
}

/** OpenAI's POST /completions, as Megatron's server gives it; with `stream`, as server-sent events. */
async function completions(s: Served, body: Record<string, unknown>, id: number, events: Events): Promise<unknown> {
  const ask = completionAsk(s, body);
  const head = { id: `cmpl-${id}`, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: s.name };
  const prompts = completionPrompts(s, body.prompt);
  const choices = [];
  let [promptTokens, completionTokens] = [0, 0];
  for (const [index, prompt] of prompts.entries()) {
    const piece = (text: string, finish: string | null) =>
      events.send({ ...head, choices: [{ index, text, logprobs: null, finish_reason: finish }] });
    const { usage, chosen: _, ...choice } = await completionChoice(s, ask, prompt, ask.stream ? (text) => piece(text, null) : undefined);
    if (ask.stream) piece('', choice.finish_reason);
    choices.push({ index, ...choice });
    promptTokens += usage.prompt;
    completionTokens += usage.completion;
  }
  if (ask.stream) return undefined;
  return {
    ...head,
    choices,
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
  };
}

/** OpenAI's logprobs object: tokens, their log-probabilities (null for the first), the most likely beside each, text offsets. */
function completionLogprobs(s: Served, prompt: { text: string; context: number[] }, done: Done, kept: number, echo: boolean) {
  const n = prompt.context.length;
  const from = echo ? 0 : n;
  const listed = done.tokens.slice(from, n + kept);
  // Token i's: none for the first, the prompt's for the rest of the prompt, then the generated ones'.
  const at = (i: number): [number, [number, number][]] | null =>
    i === 0 ? null : i < n ? [done.prompt.logprobs[i - 1]!, done.prompt.top[i - 1]!] : [done.logprobs[i - n]!, done.top[i - n]!];
  const base = echo ? 0 : prompt.text.length;
  return {
    tokens: listed.map((t) => s.tokenizer.decode([t])),
    token_logprobs: listed.map((_, j) => at(from + j)?.[0] ?? null),
    top_logprobs: listed.map((_, j) => {
      const got = at(from + j);
      return got ? Object.fromEntries(got[1].map(([t, l]) => [s.tokenizer.decode([t]), l])) : null;
    }),
    text_offset: listed.map((_, j) => base + s.tokenizer.decode(done.tokens.slice(from, from + j)).length),
  };
}

/** A request's JSON body: an object, at most 64 MiB. */
async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 2 ** 20) throw new RequestError('the body is over 64 MiB');
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw new RequestError(`the body is not JSON: ${(error as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new RequestError('the body is not a JSON object');
  return body as Record<string, unknown>;
}

/** The tokenizer endpoints of vLLM's server, which evaluation harnesses ask for the server's own tokens. */
async function tokenize(s: Served, body: Record<string, unknown>): Promise<unknown> {
  if (typeof body.prompt !== 'string') throw new RequestError('prompt must be a string');
  const tokens = encode(s, body.prompt);
  return { tokens, count: tokens.length, max_model_len: s.window };
}

async function detokenize(s: Served, body: Record<string, unknown>): Promise<unknown> {
  const tokens = body.tokens;
  if (!Array.isArray(tokens) || !tokens.every((t) => isInt(t) && t >= 0 && t < s.tokenizer.vocabSize))
    throw new RequestError(`tokens must be a list of token ids below ${s.tokenizer.vocabSize}`);
  return { prompt: s.tokenizer.decode(tokens as number[]) };
}

/** A message's text: a string, or OpenAI's list of parts, whose text parts join. */
function messageText(content: unknown, at: number): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content) && content.every((p) => typeof p === 'object' && p !== null && (p as { type?: unknown }).type === 'text'))
    return content.map((p) => String((p as { text?: unknown }).text ?? '')).join('');
  throw new RequestError(`messages[${at}].content must be a string or a list of text parts`);
}

/** A token as OpenAI's chat logprobs give it: its text, log-probability, and the text's UTF-8 bytes. */
const tokenEntry = (s: Served, id: number, logprob: number) => {
  const token = s.tokenizer.decode([id]);
  return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
};

/** OpenAI's POST /chat/completions: the messages through the model's chat template, then a completion of what it writes. */
async function chatCompletions(s: Served, body: Record<string, unknown>, id: number, events: Events): Promise<unknown> {
  if (!s.chat) throw new RequestError(`${s.name} has no chat template: serve it with --chat-template FILE, or use /completions`);
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) throw new RequestError('messages must be a non-empty list');
  const turns = messages.map((m, i) => {
    if (typeof m !== 'object' || m === null || typeof (m as { role?: unknown }).role !== 'string')
      throw new RequestError(`messages[${i}] must be an object with a role`);
    return { ...(m as Record<string, unknown>), content: messageText((m as { content?: unknown }).content ?? '', i) };
  });
  const logprobs = field<boolean>(body, 'logprobs', false, isBool, 'logprobs must be a boolean value');
  const top = field<number>(
    body,
    'top_logprobs',
    0,
    (v) => isInt(v) && (v as number) >= 0 && (v as number) <= 20,
    'top_logprobs must be an integer from 0 to 20',
  );
  let text: string;
  try {
    text = s.chat.render({ messages: turns, add_generation_prompt: true, ...s.chat.tokens });
  } catch (error) {
    throw new RequestError(`the chat template: ${(error as Error).message}`);
  }
  const context = encode(s, text);
  // OpenAI's default: as many tokens as the window leaves.
  const room = Math.max(1, s.window - context.length);
  const limit = body.max_completion_tokens ?? body.max_tokens ?? room;
  const ask = completionAsk(s, { ...body, prompt: text, max_tokens: limit, echo: false, logprobs: logprobs ? top : null });
  const head = {
    id: `chatcmpl-${id}`,
    object: ask.stream ? 'chat.completion.chunk' : 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: s.name,
  };
  const chunk = (delta: Record<string, string>, finish: string | null) =>
    events.send({ ...head, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
  if (ask.stream) chunk({ role: 'assistant', content: '' }, null);
  const choice = await completionChoice(s, ask, { text, context }, ask.stream ? (piece) => chunk({ content: piece }, null) : undefined);
  if (ask.stream) {
    chunk({}, choice.finish_reason);
    return undefined;
  }
  const { prompt, completion } = choice.usage;
  return {
    ...head,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: choice.text },
        logprobs: logprobs
          ? {
              content: choice.chosen.map((c) => ({
                ...tokenEntry(s, c.id, c.logprob),
                top_logprobs: c.top.map(([t, l]) => tokenEntry(s, t, l)),
              })),
            }
          : null,
        finish_reason: choice.finish_reason,
      },
    ],
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
  };
}

/** Server-sent events: the first one starts the stream (status 200), and the route then answers undefined. */
interface Events {
  send(value: unknown): void;
}

/** The routes: the method each takes, and what it answers. */
type Route = { method: string; answer: (s: Served, body: Record<string, unknown>, id: number, events: Events) => Promise<unknown> };
const ROUTES: Record<string, Route> = {
  '/api': { method: 'PUT', answer: megatronApi },
  '/completions': { method: 'POST', answer: completions },
  '/v1/completions': { method: 'POST', answer: completions },
  '/chat/completions': { method: 'POST', answer: chatCompletions },
  '/v1/chat/completions': { method: 'POST', answer: chatCompletions },
  '/tokenize': { method: 'POST', answer: tokenize },
  '/detokenize': { method: 'POST', answer: detokenize },
};

/** Serve `s` on host:port; one request runs on the GPU at a time, the rest wait their turn. */
async function startServer(s: Served, host: string, port: number): Promise<{ url: string; close: () => Promise<void> }> {
  let turn: Promise<unknown> = Promise.resolve();
  let requests = 0;
  const send = (res: ServerResponse, status: number, value: unknown) =>
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(`${JSON.stringify(value)}\n`);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (req.method === 'GET' && path === '/health') return send(res, 200, { status: 'ok' });
    if (req.method === 'GET' && path === '/tokenizer_info')
      return send(res, 200, {
        tokenizer_class: s.tokenizer.type,
        vocab_size: s.tokenizer.vocabSize,
        model_max_length: s.window,
        eos_token: s.special?.text ?? null,
        bos_token: null,
        pad_token: null,
      });
    if (req.method === 'GET' && (path === '/v1/models' || path === '/models'))
      return send(res, 200, { object: 'list', data: [{ id: s.name, object: 'model', owned_by: 'webtron' }] });
    const route = ROUTES[path];
    if (!route) return send(res, 404, { message: `no ${path} here: PUT /api (Megatron's) or POST /completions (OpenAI's)` });
    if (req.method !== route.method) return send(res, 405, { message: `${path} takes ${route.method}, not ${req.method}` });
    const id = ++requests;
    let streaming = false;
    const events: Events = {
      send: (value) => {
        if (!streaming) res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store' });
        streaming = true;
        res.write(`data: ${JSON.stringify(value)}\n\n`);
      },
    };
    const work = async () => {
      s.counted = { prompt: 0, generated: 0 };
      const started = performance.now();
      try {
        const answer = await route.answer(s, await readBody(req), id, events);
        if (streaming) res.end('data: [DONE]\n\n');
        else send(res, 200, answer);
        const seconds = (performance.now() - started) / 1000;
        const { prompt, generated } = s.counted;
        const rate = generated > 0 ? ` (${(generated / seconds).toFixed(1)} tokens/s)` : '';
        const tokens = prompt + generated > 0 ? `, ${prompt} prompt + ${generated} new tokens${rate}` : '';
        console.error(`webtron serve: ${req.method} ${path} #${id}: 200 in ${seconds.toFixed(2)} s${tokens}`);
      } catch (error) {
        const bad = error instanceof RequestError;
        // Once a stream has started its status is sent: the error is its last event.
        if (streaming) res.end(`data: ${JSON.stringify({ error: { message: (error as Error).message } })}\n\n`);
        else send(res, bad ? 400 : 500, { message: (error as Error).message });
        console.error(`webtron serve: ${req.method} ${path} #${id}: ${bad ? 400 : 500}: ${(error as Error).message}`);
      }
    };
    turn = turn.then(work);
  });
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => done());
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  return { url: `http://${hostPort(host, bound)}/`, close: () => new Promise<void>((done) => server.close(() => done())) };
}

export const serve: Command = {
  summary:
    "serve a model over HTTP as Megatron-LM's text generation server (PUT /api) and OpenAI's completions (POST /completions): webtron serve --load DIR",
  flags: { ...GPU_FLAGS, ...SERVE_FLAGS },
  async run(values) {
    portFlag(values);
    const maxSeq = values['inference-max-seq-length'] as number;
    if (!Number.isInteger(maxSeq) || maxSeq < 1)
      throw new FlagError(`--inference-max-seq-length must be a positive integer (positions of context), got ${maxSeq}`);
    const load = values.load as string | undefined;
    const onnx = values.onnx as string | undefined;
    const gpu = { backend: values.backend as string | undefined, adapter: values.adapter as string | undefined };
    const model = await openSampledModel(load, onnx, gpu);
    const tokenizer = await loadTokenizer(model.tokenizer);
    if (tokenizer.vocabSize > model.config.vocabSize)
      throw new FlagError(
        `${load ?? onnx}: its tokenizer has ${tokenizer.vocabSize} tokens, more than the model's vocabulary of ${model.config.vocabSize}; give a model and tokenizer that belong together`,
      );
    const window = Math.min(positionLimit(model.config), maxSeq);
    const name = basename(resolve(load ?? onnx!));
    const chat = chatTemplateOf(model.tokenizer, {
      file: values['chat-template'] as string | undefined,
      folder: load !== undefined && isHfFolder(load) ? load : undefined,
    });
    const special = specialToken(tokenizer);
    const served: Served = {
      model,
      tokenizer,
      window,
      random: splitmix32(values.seed as number),
      name,
      special,
      chat,
      counted: { prompt: 0, generated: 0 },
    };
    const server = await listenFlag(values, (host, port) => startServer(served, host, port));
    const c = model.config;
    console.log(
      `webtron serve: ${server.url} (${name}: ${c.numLayers} layers, hidden ${c.hiddenSize}, ${tokenizer.type} of ${tokenizer.vocabSize} tokens, ${window} positions; PUT /api, POST /completions${chat ? `, POST /chat/completions (chat template: ${chat.source})` : ''}; Ctrl-C stops it)`,
    );
    await untilStopped(server.close);
    model.release();
  },
};
