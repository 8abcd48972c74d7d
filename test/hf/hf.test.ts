/**
 * Hugging Face interop: webtron's GPT as a GPT-2 folder and back.
 *
 * The referee is test/hf/gpt2_reference.py: the standard library and numpy read the folder
 * (safetensors is JSON plus raw bytes) into a GPT-2 forward in torch written to transformers'
 * modeling_gpt2 (Conv1D as x @ W + b, gelu_new, its layer-norm eps, scores over sqrt(head size)).
 * It also writes random GPT-2 folders as transformers saves them, for the import. Tokenizer files
 * are refereed by @huggingface/tokenizers against webtron's own tokenizers.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readHeader } from '../../src/checkpoint/safetensors.js';
import { mobyDick } from '../../src/data/corpus.js';
import { ByteTokenizer, CharTokenizer, loadTokenizer, type Tokenizer } from '../../src/data/tokenizer.js';
import { GpuContext } from '../../src/gpu/context.js';
import { gpt2ConfigJson, hfName, parseGpt2Config, readGpt2Config, webtronName } from '../../src/hf/gpt2.js';
import { parseLlamaConfig } from '../../src/hf/llama.js';
import { hfGptConfig, loadHfFolderModel } from '../../src/hf/model.js';
import { builtinGpt2Files, readFolderTokenizer, tokenizerFiles } from '../../src/hf/tokenizer.js';
import { openFolderWeights, openHfWeights } from '../../src/hf/weights.js';
import { Gpt, type GptConfig } from '../../src/nn/gpt.js';
import { gptParams, isNormWeight } from '../../src/nn/gpt-spec.js';
import { Graph } from '../../src/nn/graph.js';
import { LocalParams } from '../../src/nn/params.js';
import { vocabWindows } from '../../src/nn/vocab-windows.js';
import { loadCheckpointModel } from '../../src/train/checkpoint-model.js';
import { torchReferee } from '../helpers/apt.js';
import { bf16ToFloat, floatToBf16 } from '../../src/collectives/reduce.js';
import { seeded } from '../helpers/seed.js';
import { BIN, train } from '../helpers/train.js';
import { trickyText } from '../helpers/tricky-text.js';
import { checkpointLogits, logitsDifference, expectRefereeLogits, type LogitsCheck, refereeLogits } from '../helpers/referee-logits.js';
import { addedToken } from '../helpers/added-token.js';
import { cliInProcess } from '../helpers/cli.js';
import { PYTHON, pythonRuns } from '../helpers/python.js';

const REFEREE = fileURLToPath(new URL('./gpt2_reference.py', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'webtron-hf-'));
let ctx: GpuContext;

const torch = torchReferee();
const skipWithoutTorch = torch.skipWithout;

/** Llama's block: rope, RMSNorm, SwiGLU, no linear biases. */
const LLAMA = [
  '--position-embedding-type',
  'rope',
  '--normalization',
  'RMSNorm',
  '--swiglu',
  '--ffn-hidden-size',
  '40',
  '--disable-bias-linear',
];
const LLAMA_REFEREE = fileURLToPath(new URL('./llama_reference.py', import.meta.url));

const exportHf = (load: string, output: string, ...more: string[]) =>
  spawnSync(process.execPath, [BIN, 'export', '--load', load, '--format', 'hf', '--output', output, ...more], { encoding: 'utf8' });

beforeAll(async () => {
  ctx = await GpuContext.create();
  torch.find();
  const shape = ['--num-layers', '2', '--hidden-size', '32', '--num-attention-heads', '4', '--seq-length', '16', '--micro-batch-size', '2'];
  for (const [name, more] of [
    ['tied', []],
    // Zero-centered norms (--apply-layernorm-1p): the folders hold gamma, the param plus 1.
    [
      'untied',
      ['--untie-embeddings-and-output-weights', '--tokenizer-type', 'ByteTokenizer', '--norm-epsilon', '0.01', '--apply-layernorm-1p'],
    ],
    [
      'llama',
      [
        ...LLAMA,
        '--apply-layernorm-1p',
        '--untie-embeddings-and-output-weights',
        '--group-query-attention',
        '--num-query-groups',
        '2',
        '--rotary-base',
        '500000',
        '--use-rope-scaling',
        '--rope-scaling-factor',
        '4',
      ],
    ],
    // Qwen2's block: Llama's with biases on q, k and v.
    ['qwen2-interleaved', [...LLAMA, '--add-qkv-bias', '--rotary-interleaved', '--rotary-base', '500', '--norm-epsilon', '0.01']],
  ] as const) {
    const run = await train([
      ...shape,
      ...more,
      '--train-iters',
      '3',
      '--lr',
      '1e-2',
      '--save',
      join(dir, name),
      '--run-dir',
      join(dir, `run-${name}`),
    ]);
    if (run.code !== 0) throw new Error(`webtron train failed: ${run.stderr}`);
  }
}, 300_000);
afterAll(() => {
  ctx?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('names and config.json', () => {
  it("maps every param to transformers' GPT-2 names and back, prefixed or not", () => {
    const specs = gptParams({ numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, seqLength: 4, vocabSize: 10, tiedHead: false });
    // GPT2LMHeadModel's state dict, as modeling_gpt2 registers it.
    const hf = ['wte.weight', 'wpe.weight'];
    for (const l of [0, 1])
      for (const m of ['ln_1', 'attn.c_attn', 'attn.c_proj', 'ln_2', 'mlp.c_fc', 'mlp.c_proj'])
        hf.push(`h.${l}.${m}.weight`, `h.${l}.${m}.bias`);
    hf.push('ln_f.weight', 'ln_f.bias', 'lm_head.weight');
    expect(specs.map((s) => hfName(s.name)).sort()).toEqual([...hf].sort());
    for (const s of specs) {
      expect(webtronName(hfName(s.name))).toBe(s.name);
      expect(webtronName(hfName(s.name, true))).toBe(s.name);
    }
    for (const stranger of ['transformer.lm_head.weight', 'h.0.attn.bias', 'h.0.mlp.c_fc.lora_A', 'score.weight', 'h.x.ln_1.weight'])
      expect(webtronName(stranger), stranger).toBeNull();
  });

  it('config.json reads back as the model it was written from; each unsupported field is refused in one line naming it', () => {
    const model: GptConfig = {
      numLayers: 3,
      hiddenSize: 48,
      numAttentionHeads: 6,
      seqLength: 32,
      maxPositionEmbeddings: 64,
      vocabSize: 300,
      tiedHead: false,
    };
    const json = gpt2ConfigJson({ ...model, hiddenDropout: 0.05, attentionDropout: 0.1 }, { dtype: 'bf16', eod: 299 });
    expect(json.torch_dtype).toBe('bfloat16');
    expect(parseGpt2Config(json, 'c.json')).toEqual({
      numLayers: 3,
      hiddenSize: 48,
      numAttentionHeads: 6,
      maxPositionEmbeddings: 64,
      ffnHiddenSize: 192,
      normEpsilon: 1e-5,
      vocabSize: 300,
      tiedHead: false,
      hiddenDropout: 0.05,
      attentionDropout: 0.1,
      bosTokenId: 299,
      eosTokenId: 299,
    });
    // A narrower MLP is written as n_inner and read back; 4 × n_embd stays null, as GPT2Config writes it.
    expect(json.n_inner).toBeNull();
    const narrow = gpt2ConfigJson({ ...model, ffnHiddenSize: 100 }, { dtype: 'fp32', eod: null });
    expect(narrow.n_inner).toBe(100);
    expect(parseGpt2Config(narrow, 'c.json').ffnHiddenSize).toBe(100);
    for (const [field, value] of [
      ['scale_attn_by_inverse_layer_idx', true],
      ['reorder_and_upcast_attn', true],
      ['activation_function', 'relu'],
      ['n_inner', 0],
      ['layer_norm_epsilon', 0],
      ['add_cross_attention', true],
      ['model_type', 'llama'],
      ['n_layer', 0],
    ] as const) {
      const error = errorOf(() => parseGpt2Config({ ...json, [field]: value }, 'c.json'));
      expect(error?.message, field).toContain(`c.json: ${field} is ${JSON.stringify(value)}`);
      expect(error?.message.split('\n')).toHaveLength(1);
    }
  });
});

describe('tokenizer files', () => {
  const text = `${mobyDick().documents.slice(0, 3).join('\n\n')}${trickyText(seeded('hf tokenizer text').random, 400).replaceAll('<|endoftext|>', '')}`;
  const ids = (t: Tokenizer) => Array.from(t.encode(text));
  const hfTokenizer = (files: Map<string, string>) =>
    new HfTokenizer(JSON.parse(files.get('tokenizer.json')!), JSON.parse(files.get('tokenizer_config.json')!));

  it("GPT-2's vocab.json and merges.txt, rebuilt from the built-in ranks, tokenize as the built-in tokenizer does", async () => {
    const builtin = await loadTokenizer({ type: 'GPT2BPETokenizer' });
    const files = await tokenizerFiles(builtin.state(), 1024);
    // The first merges of GPT-2's published merges.txt.
    expect(files.get('merges.txt')!.split('\n').slice(0, 4)).toEqual(['#version: 0.2', 'Ġ t', 'Ġ a', 'h e']);
    const vocab = JSON.parse(files.get('vocab.json')!) as Record<string, number>;
    expect(Object.keys(vocab)).toHaveLength(50257);
    expect(vocab['<|endoftext|>']).toBe(50256);
    expect(hfTokenizer(files).encode(text, { add_special_tokens: false }).ids).toEqual(ids(builtin));
    // From vocab and merges files, through the same reader `--vocab-file --merge-file` use.
    const fromFiles = await loadTokenizer({ type: 'GPT2BPETokenizer', vocab, merges: (await builtinGpt2Files()).merges });
    expect(ids(fromFiles)).toEqual(ids(builtin));
  });

  it('Char and Byte get a tokenizer.json that tokenizes and decodes to the same ids and text', async () => {
    for (const tokenizer of [CharTokenizer.fromText(text), new ByteTokenizer()]) {
      const hf = hfTokenizer(await tokenizerFiles(tokenizer.state(), 64));
      const got = hf.encode(text).ids;
      expect(got, tokenizer.type).toEqual(ids(tokenizer));
      expect(hf.decode(got, { skip_special_tokens: false, clean_up_tokenization_spaces: false })).toBe(text);
    }
  });

  it("a folder's files read back as the tokenizer they were written from", async () => {
    for (const state of [CharTokenizer.fromText(text).state(), new ByteTokenizer().state(), { type: 'GPT2BPETokenizer' as const }]) {
      const folder = mkdtempSync(join(dir, 'tok-'));
      for (const [name, content] of await tokenizerFiles(state, 64)) writeFileSync(join(folder, name), content);
      expect(await readFolderTokenizer(folder)).toEqual(state);
    }
  });

  it("vocab.json and merges.txt beside a tokenizer.json of another kind (Qwen's: its own regex, chat tokens) read as the tokenizer.json", async () => {
    const folder = mkdtempSync(join(dir, 'qwen-like-'));
    const files = await tokenizerFiles({ type: 'GPT2BPETokenizer' }, 64);
    for (const [name, content] of files) writeFileSync(join(folder, name), content);
    const json = JSON.parse(files.get('tokenizer.json')!) as Record<string, unknown>;
    // Qwen2's split: digits one by one, then byte-level without GPT-2's regex; two chat tokens.
    const regex =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    json.pre_tokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    };
    json.added_tokens = [...(json.added_tokens as unknown[]), addedToken(50257, '<|im_start|>'), addedToken(50258, '<|im_end|>')];
    writeFileSync(join(folder, 'tokenizer.json'), JSON.stringify(json));
    const state = await readFolderTokenizer(folder);
    expect(state?.type).toBe('HuggingFaceTokenizer');
    const tokenizer = await loadTokenizer(state!);
    const { vocab } = await builtinGpt2Files();
    const digits = [vocab['2'], vocab['0'], vocab['2'], vocab['4']];
    expect([...tokenizer.encode('<|im_start|>2024<|im_end|>')]).toEqual([50257, ...digits, 50258]);
    // GPT-2's own reading of the same year merges digits, which is why vocab.json and merges.txt are not enough.
    const gpt2 = await loadTokenizer({ type: 'GPT2BPETokenizer' });
    expect([...gpt2.encode('2024')]).not.toEqual(digits);
  });
});

/** webtron's logits [batch, t, vocab] for `ids` from a GPT and its params' values. */
async function webtronLogits(config: GptConfig, values: (name: string) => Float32Array, ids: Uint32Array, batch: number) {
  const params = new LocalParams(ctx, Gpt.specs(config));
  params.set(new Map(Gpt.specs(config).map((s) => [s.name, values(s.name)])));
  const g = new Graph(ctx, { training: false });
  const logits = await g.read(new Gpt(config, params.tensors).forward(g, g.input(ids, [batch, ids.length / batch])).logits);
  g.release();
  params.destroy();
  return logits;
}

/** The error `run` throws (null when it throws none). */
function errorOf(run: () => unknown): Error | null {
  try {
    run();
  } catch (e) {
    return e as Error;
  }
  return null;
}

describe('webtron export --format hf', () => {
  it("writes the gpt2 folder's names (a tied head) or GPT2LMHeadModel's (untied), format pt, and its config", () => {
    for (const [name, names] of [
      ['tied', (n: string) => n],
      ['untied', (n: string) => (n === 'lm_head.weight' ? n : `transformer.${n}`)],
    ] as const) {
      const out = join(dir, `names-${name}`);
      const run = exportHf(join(dir, name), out);
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toMatch(
        /^wrote .*: [\d,]+ params \(float32 checkpoint at iteration 3\) as float32, .* of model\.safetensors; config\.json, generation_config\.json, tokenizer\.json, tokenizer_config\.json;/,
      );
      const config = readGpt2Config(out);
      const specs = gptParams({ ...config, seqLength: config.maxPositionEmbeddings });
      const fd = openSync(join(out, 'model.safetensors'), 'r');
      const header = readHeader(fd, 'model.safetensors');
      closeSync(fd);
      expect(header.metadata).toEqual({ format: 'pt' });
      expect([...header.entries.keys()]).toEqual(specs.map((s) => names(hfName(s.name))));
      expect(config.tiedHead).toBe(name === 'tied');
    }
  });

  it("the referee's GPT-2 forward of the folder gives webtron's logits within 1e-4: tied and untied heads, fp32 and bf16", async (context) => {
    skipWithoutTorch(context);
    const { random } = seeded('hf export logits');
    const checks: LogitsCheck[] = [];
    for (const name of ['tied', 'untied'])
      for (const dtype of ['fp32', 'bf16']) {
        const out = join(dir, `${name}-${dtype}`);
        const run = exportHf(join(dir, name), out, '--dtype', dtype);
        expect(run.status, run.stderr).toBe(0);
        const model = await loadCheckpointModel(ctx, join(dir, name));
        const [batch, t] = [2, 12];
        const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * model.config.vocabSize));
        let want: Float32Array;
        if (dtype === 'fp32') {
          const g = new Graph(ctx, { training: false });
          want = await g.read(model.gpt.forward(g, g.input(ids, [batch, t])).logits);
          g.release();
        } else {
          // bf16 weights: webtron's import of the folder, then its forward in fp32 (of gamma, as the folder holds it).
          const weights = openHfWeights(out, Gpt.specs(model.config), model.config.tiedHead !== false);
          want = await webtronLogits({ ...model.config, applyLayernorm1p: false }, (n) => weights.read(n), ids, batch);
          weights.close();
        }
        model.params.destroy();
        checks.push({ what: `${name} head, ${dtype}`, folder: out, ids, batch, want });
      }
    expectRefereeLogits(REFEREE, checks, 1e-4);
  });
});

describe('webtron export --format hf of a Llama-block model', () => {
  it("writes LlamaForCausalLM's folder, or Qwen2ForCausalLM's with q, k and v biases; the referee's forward gives webtron's logits within 1e-4 (grouped and rotate-half, or interleaved rope; fp32 and bf16)", async (context) => {
    skipWithoutTorch(context);
    const { random } = seeded('hf export llama logits');
    const checks: LogitsCheck[] = [];
    for (const [name, dtype] of [
      ['llama', 'fp32'],
      ['llama', 'bf16'],
      ['qwen2-interleaved', 'fp32'],
    ] as const) {
      const out = join(dir, `${name}-${dtype}`);
      const run = exportHf(join(dir, name), out, '--dtype', dtype);
      expect(run.status, run.stderr).toBe(0);
      const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      expect(config).toMatchObject({
        architectures: [name === 'llama' ? 'LlamaForCausalLM' : 'Qwen2ForCausalLM'],
        model_type: name === 'llama' ? 'llama' : 'qwen2',
        hidden_size: 32,
        intermediate_size: 40,
        num_attention_heads: 4,
        num_key_value_heads: name === 'llama' ? 2 : 4,
        rope_theta: name === 'llama' ? 500000 : 500,
        rope_scaling:
          name === 'llama'
            ? { factor: 4, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192, rope_type: 'llama3' }
            : null,
        tie_word_embeddings: name !== 'llama',
        torch_dtype: dtype === 'fp32' ? 'float32' : 'bfloat16',
      });
      const model = await loadCheckpointModel(ctx, join(dir, name));
      const [batch, t] = [2, 12];
      const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * model.config.vocabSize));
      const values = new Map<string, Float32Array>();
      const centered = model.config.applyLayernorm1p ?? false;
      expect(centered).toBe(name === 'llama');
      for (const spec of Gpt.specs(model.config)) {
        const p = await model.params.read(spec.name);
        // The values the folder holds: gamma for zero-centered norms, rounded for bf16.
        const v = centered && isNormWeight(spec.name) ? p.map((x) => x + 1) : p;
        values.set(spec.name, dtype === 'bf16' ? v.map((x) => bf16ToFloat(floatToBf16(x))) : v);
      }
      model.params.destroy();
      const want = await webtronLogits({ ...model.config, applyLayernorm1p: false }, (n) => values.get(n)!, ids, batch);
      checks.push({ what: `${name}, ${dtype}`, folder: out, ids, batch, want });
    }
    expectRefereeLogits(LLAMA_REFEREE, checks, 1e-4);
  });

  it('--init-from the exported Llama or Qwen2 folder gives the logits of the checkpoint it came from (interleaved rope read back as rotate-half, zero-centered norms as zero-centered)', async () => {
    const { random } = seeded('hf llama round trip');
    for (const name of ['llama', 'qwen2-interleaved']) {
      const folder = join(dir, `${name}-fp32`);
      if (!existsSync(folder)) expect(exportHf(join(dir, name), folder).status).toBe(0);
      const again = join(dir, `${name}-again`);
      const run = await train([
        ...['--init-from', folder, '--seq-length', '16', '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0'],
        ...['--save', again, '--run-dir', join(dir, `run-${name}-again`)],
        ...(name === 'llama' ? ['--apply-layernorm-1p'] : []),
      ]);
      expect(run.code, run.stderr).toBe(0);
      const before = await loadCheckpointModel(ctx, join(dir, name));
      const after = await loadCheckpointModel(ctx, again);
      expect(after.config).toMatchObject({ positionEmbeddingType: 'rope', normalization: 'RMSNorm', swiglu: true, addBiasLinear: false });
      expect(after.config.rotaryInterleaved).toBe(false);
      expect(after.config.numQueryGroups).toBe(before.config.numQueryGroups);
      expect(after.config.ropeScalingFactor).toBe(before.config.ropeScalingFactor);
      expect(after.config.addQkvBias ?? false).toBe(name !== 'llama');
      expect(after.config.applyLayernorm1p ?? false).toBe(name === 'llama');
      const [batch, t] = [2, 12];
      const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * before.config.vocabSize));
      const logits = async (m: typeof before) => {
        const g = new Graph(ctx, { training: false });
        const out = await g.read(m.gpt.forward(g, g.input(ids, [batch, t])).logits);
        g.release();
        m.params.destroy();
        return out;
      };
      const want = await logits(before);
      const { worst } = logitsDifference(await logits(after), want);
      console.log(`${name}: exported and read back, max abs difference of the logits ${worst.toExponential(2)}`);
      expect(worst).toBeLessThanOrEqual(1e-5);
    }
  });

  it('webtron sample --load an exported folder writes the text of the checkpoint it came from (GPT-2 and Qwen2 folders); a folder without a tokenizer is one line', () => {
    const sample = (load: string) =>
      spawnSync(process.execPath, [BIN, 'sample', '--load', load, '--prompt', 'Call me', '--tokens', '12', '--seed', '5'], {
        encoding: 'utf8',
      });
    for (const name of ['tied', 'qwen2-interleaved']) {
      const folder = join(dir, `${name}-fp32`);
      if (!existsSync(folder)) expect(exportHf(join(dir, name), folder).status).toBe(0);
      const want = sample(join(dir, name));
      expect(want.status, want.stderr).toBe(0);
      expect(want.stdout.startsWith('Call me')).toBe(true);
      const got = sample(folder);
      expect(got.status, got.stderr).toBe(0);
      expect(got.stdout, name).toBe(want.stdout);
    }
    const bare = join(dir, 'no-tokenizer');
    for (const file of ['config.json', 'model.safetensors']) cpSync(join(dir, 'tied-fp32', file), join(bare, file));
    const run = sample(bare);
    expect(run.status).toBe(2);
    expect(run.stderr.trim()).toBe(
      `webtron sample: --load ${bare} has no tokenizer files (vocab.json and merges.txt, or tokenizer.json); copy the model's tokenizer into it`,
    );
    // The byte tokenizer of another folder (256 tokens) beside the character model's smaller vocabulary.
    const untied = join(dir, 'untied-fp32');
    if (!existsSync(untied)) expect(exportHf(join(dir, 'untied'), untied).status).toBe(0);
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) cpSync(join(untied, file), join(bare, file));
    const vocab = (JSON.parse(readFileSync(join(bare, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;
    const mixed = sample(bare);
    expect(mixed.status).toBe(2);
    expect(mixed.stderr.trim()).toBe(
      `webtron sample: ${bare}: its tokenizer has 256 tokens, more than the model's vocabulary of ${vocab}; give a model and tokenizer that belong together`,
    );
  });

  it("a Llama 3-shaped folder written by Python (grouped heads, rope scaling, eps 1e-6, inv_freq buffers) starts a run whose forward gives the referee's logits", async (context) => {
    skipWithoutTorch(context);
    const { seed, random } = seeded('hf llama folder from python');
    const folder = join(dir, 'llama-python');
    // 8 heads of 8 sharing 2 key and value heads, an MLP of 56.
    const wrote = spawnSync(PYTHON, [LLAMA_REFEREE, 'write-random', folder, String(seed), '2', '64', '8', '2', '56', '32'], {
      encoding: 'utf8',
    });
    expect(wrote.status, wrote.stderr).toBe(0);
    const saved = join(dir, 'llama-python-run');
    const run = await train([
      ...['--init-from', folder, '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0'],
      ...['--save', saved, '--run-dir', join(dir, 'run-llama-python')],
    ]);
    expect(run.code, run.stderr).toBe(0);
    const model = await loadCheckpointModel(ctx, saved);
    expect(model.config).toMatchObject({
      numQueryGroups: 2,
      normEpsilon: 1e-6,
      ropeScalingFactor: 8,
      rotaryBase: 500000,
      tiedHead: false,
      seqLength: 32,
    });
    const batch = 2;
    const { ids, want } = await checkpointLogits(ctx, model, random, batch, 32);
    const { worst, largest } = logitsDifference(refereeLogits(LLAMA_REFEREE, folder, ids, batch), want);
    console.log(
      `Llama 3-shaped folder from Python: max abs difference of the logits ${worst.toExponential(2)} (largest logit ${largest.toFixed(2)})`,
    );
    expect(worst).toBeLessThanOrEqual(1e-4);
  });

  it("a folder of heads head_dim wide, not hidden_size / heads (Mistral-Nemo's shape), trains as --kv-channels, gives the referee's logits and exports its head_dim", async (context) => {
    skipWithoutTorch(context);
    const { seed, random } = seeded('hf head_dim folder from python');
    const folder = join(dir, 'head-dim-python');
    // hidden 48 and 4 heads of 16 (64 in all, where 48 / 4 would give 12), 2 key and value heads.
    pythonRuns(LLAMA_REFEREE, [['write-random', folder, seed, 2, 48, 4, 2, 40, 16, 'head_dim=16']]);
    // webtron sample --load builds the same model from the folder.
    expect(hfGptConfig(folder)).toMatchObject({ hiddenSize: 48, numAttentionHeads: 4, kvChannels: 16, numQueryGroups: 2 });
    const saved = join(dir, 'head-dim-ck');
    const run = await train([
      ...['--init-from', folder, '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0'],
      ...['--save', saved, '--run-dir', join(dir, 'head-dim-run')],
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('hidden 48, 4 heads of 16,');
    const model = await loadCheckpointModel(ctx, saved);
    expect(model.config).toMatchObject({ hiddenSize: 48, numAttentionHeads: 4, kvChannels: 16, numQueryGroups: 2 });
    const batch = 2;
    const { ids, want } = await checkpointLogits(ctx, model, random, batch, 16);
    // Exported again: head_dim in config.json, and the referee's logits of the new folder.
    const out = join(dir, 'head-dim-out');
    const exported = exportHf(saved, out);
    expect(exported.status, exported.stderr).toBe(0);
    expect(exported.stdout).toContain('load it with LlamaForCausalLM.from_pretrained');
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toMatchObject({
      hidden_size: 48,
      num_attention_heads: 4,
      head_dim: 16,
    });
    expectRefereeLogits(
      LLAMA_REFEREE,
      [
        { what: 'head_dim folder from Python', folder, ids, batch, want },
        { what: 'head_dim folder exported again', folder: out, ids, batch, want },
      ],
      1e-4,
    );
    // A --kv-channels that contradicts the folder is one line (main() in this process).
    const contradicting = await cliInProcess(['train', '--init-from', folder, '--kv-channels', '12', '--train-iters', '1'], dir);
    expect(contradicting.status).toBe(2);
    expect(contradicting.stderr.trim()).toMatch(
      /^webtron train: --kv-channels 12 contradicts .*config\.json: head_dim is 16; leave the flag out to take the folder's value$/,
    );
  });

  it("a Qwen2 folder written by Python (q, k and v biases, a tied head, no sliding window) reads as Qwen2's block and gives the referee's logits; webtron serve chats through its chat_template.jinja", async (context) => {
    skipWithoutTorch(context);
    const { seed, random } = seeded('hf qwen2 folder from python');
    const folder = join(dir, 'qwen2-python');
    // 4 heads of 8 sharing 2 key and value heads, an MLP of 24.
    const wrote = spawnSync(PYTHON, [LLAMA_REFEREE, 'write-random', folder, String(seed), '2', '32', '4', '2', '24', '16', 'qwen2'], {
      encoding: 'utf8',
    });
    expect(wrote.status, wrote.stderr).toBe(0);
    // The model webtron sample --load builds from the folder: Qwen2's block, sized by config.json.
    const config = hfGptConfig(folder);
    expect(config).toEqual({
      ...{ numLayers: 2, hiddenSize: 32, numAttentionHeads: 4, vocabSize: 257, seqLength: 16, maxPositionEmbeddings: 16 },
      ...{ ffnHiddenSize: 24, tiedHead: true, normEpsilon: 1e-6, hiddenDropout: 0, attentionDropout: 0 },
      ...{ positionEmbeddingType: 'rope', rotaryBase: 1e6, normalization: 'RMSNorm', swiglu: true, addBiasLinear: false },
      ...{ addQkvBias: true, numQueryGroups: 2 },
    });
    const [batch, t] = [2, 16];
    const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * config.vocabSize));
    const weights = openFolderWeights(folder, config);
    const want = await webtronLogits(config, (n) => weights.read(n), ids, batch);
    weights.close();
    const { worst } = logitsDifference(refereeLogits(LLAMA_REFEREE, folder, ids, batch), want);
    console.log(`Qwen2 folder from Python: max abs difference of the logits ${worst.toExponential(2)}`);
    expect(worst).toBeLessThanOrEqual(1e-4);
    // A sliding window is refused in one line.
    const raw = JSON.parse(readFileSync(join(folder, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(() => parseLlamaConfig({ ...raw, use_sliding_window: true }, 'c.json')).toThrow(
      /^initFrom: c\.json: use_sliding_window is true, which webtron does not compute \(it computes full attention in every layer, false\)$/,
    );
    // webtron serve finds the folder's chat_template.jinja: a chat is the completion of the text it
    // renders, whose <|endoftext|> is the one token 256.
    writeFileSync(join(folder, 'chat_template.jinja'), '{% for m in messages %}{{ m.role }}:{{ m.content }}<|endoftext|>{% endfor %}A:');
    const server = spawn('node', [BIN, 'serve', '--load', folder, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const line = await new Promise<string>((done, fail) => {
        let out = '';
        server.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          if (out.includes('\n')) done(out.split('\n')[0]!);
        });
        server.on('exit', (code) => fail(new Error(`webtron serve exited ${code}: ${out}`)));
      });
      expect(line).toMatch(/POST \/chat\/completions \(chat template: \S+chat_template\.jinja\)/);
      const url = /webtron serve: (http:\S+)/.exec(line)![1]!;
      const post = async (path: string, body: unknown) =>
        (await (await fetch(new URL(path, url), { method: 'POST', body: JSON.stringify(body) })).json()) as Record<string, unknown>;
      const rendered = 'user:Call me<|endoftext|>A:';
      expect((await post('/tokenize', { prompt: rendered })).tokens).toEqual([...Buffer.from('user:Call me'), 256, ...Buffer.from('A:')]);
      const ask = { max_tokens: 4, temperature: 0 };
      const chat = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Call me' }], ...ask });
      const plain = await post('/v1/completions', { prompt: rendered, ...ask });
      const content = (chat.choices as { message: { content: string } }[])[0]!.message.content;
      expect(content).toBe((plain.choices as { text: string }[])[0]!.text);
      expect(chat.usage).toEqual(plain.usage);
    } finally {
      const exited = new Promise((done) => server.once('exit', done));
      server.kill('SIGTERM');
      await exited;
    }
  });

  it("a Qwen3 folder written by Python (q and k norms, heads of head_dim, a tied head) reads as Qwen3's block, gives the referee's logits and exports back as Qwen3's", async (context) => {
    skipWithoutTorch(context);
    const { seed, random } = seeded('hf qwen3 folder from python');
    const folder = join(dir, 'qwen3-python');
    // 4 heads of 12 (48 in all, where 32 / 4 would give 8) sharing 2 key and value heads, an MLP of 24.
    // And a Llama folder without q and k norms, for the flags that contradict it below.
    const plain = join(dir, 'llama-without-qk-norms');
    pythonRuns(LLAMA_REFEREE, [
      ['write-random', folder, seed, 2, 32, 4, 2, 24, 16, 'qwen3', 'head_dim=12'],
      ['write-random', plain, seed, 1, 32, 4, 2, 24, 16],
    ]);
    const config = hfGptConfig(folder);
    expect(config).toMatchObject({
      ...{ hiddenSize: 32, numAttentionHeads: 4, numQueryGroups: 2, kvChannels: 12, qkLayernorm: true, tiedHead: true },
      ...{ normalization: 'RMSNorm', swiglu: true, addBiasLinear: false, addQkvBias: false, rotaryBase: 1e6 },
    });
    const [batch, t] = [2, 16];
    const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * config.vocabSize));
    const weights = openFolderWeights(folder, config);
    const want = await webtronLogits(config, (n) => weights.read(n), ids, batch);
    weights.close();
    // Trained a step at lr 0 and exported: Qwen3's config.json, and the referee's logits of the new folder.
    const saved = join(dir, 'qwen3-ck');
    const run = await train([
      ...['--init-from', folder, '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0'],
      ...['--save', saved, '--run-dir', join(dir, 'qwen3-run')],
    ]);
    expect(run.code, run.stderr).toBe(0);
    const out = join(dir, 'qwen3-out');
    const exported = exportHf(saved, out);
    expect(exported.status, exported.stderr).toBe(0);
    expect(exported.stdout).toContain('load it with Qwen3ForCausalLM.from_pretrained');
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toMatchObject({
      ...{ architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', head_dim: 12, attention_bias: false, use_sliding_window: false },
    });
    expectRefereeLogits(
      LLAMA_REFEREE,
      [
        { what: 'Qwen3 folder from Python', folder, ids, batch, want },
        { what: 'Qwen3 folder exported again', folder: out, ids, batch, want },
      ],
      1e-4,
    );
    // --qk-layernorm belongs to the folder: given against a Llama one it is one line (main() in this process).
    const llama = await cliInProcess(['train', '--init-from', plain, '--qk-layernorm', '--train-iters', '1'], dir);
    expect(llama.status).toBe(2);
    expect(llama.stderr.trim()).toMatch(
      /^webtron train: --qk-layernorm contradicts .*config\.json: Llama has no norms of q and k; leave the flag out$/,
    );
    const relu2 = await cliInProcess(['train', '--init-from', plain, '--squared-relu', '--train-iters', '1'], dir);
    expect(relu2.status).toBe(2);
    expect(relu2.stderr.trim()).toMatch(
      /^webtron train: --squared-relu contradicts .*config\.json: Llama has a SwiGLU MLP; leave the flag out$/,
    );
  });

  it('a Llama (or Mistral) config.json webtron does not compute is one line naming the field', () => {
    const good = JSON.parse(readFileSync(join(dir, 'llama-fp32', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(parseLlamaConfig(good, 'c.json')).toMatchObject({
      numLayers: 2,
      hiddenSize: 32,
      ffnHiddenSize: 40,
      tiedHead: false,
      numQueryGroups: 2,
    });
    for (const [field, value] of [
      ['num_key_value_heads', 3],
      ['hidden_act', 'gelu'],
      ['rms_norm_eps', -1],
      ['rope_scaling', { rope_type: 'yarn', factor: 8 }],
      ['attention_bias', true],
      ['intermediate_size', 0],
      ['head_dim', 0],
    ] as const) {
      const error = errorOf(() => parseLlamaConfig({ ...good, [field]: value }, 'c.json'));
      expect(error?.message, field).toContain(`c.json: ${field} is ${JSON.stringify(value)}`);
      expect(error?.message.split('\n')).toHaveLength(1);
    }
    // Mistral's config.json is Llama's with a sliding window: none, or one the context fits in, reads
    // as the Llama model; a shorter one is refused, and so is a Llama head under model_type mistral.
    const positions = good.max_position_embeddings as number;
    const mistral = { ...good, model_type: 'mistral', architectures: ['MistralForCausalLM'] };
    for (const window of [null, positions, 4 * positions])
      expect(parseLlamaConfig({ ...mistral, sliding_window: window }, 'c.json')).toEqual(parseLlamaConfig(good, 'c.json'));
    expect(() => parseLlamaConfig({ ...mistral, sliding_window: positions - 1 }, 'c.json')).toThrow(
      new RegExp(
        `^initFrom: c\\.json: sliding_window is ${positions - 1}, which webtron does not compute \\(it computes full attention: no window \\(null\\) or one of at least max_position_embeddings, ${positions}\\)$`,
      ),
    );
    expect(() => parseLlamaConfig({ ...mistral, architectures: ['LlamaForCausalLM'] }, 'c.json')).toThrow(
      /architectures is \["LlamaForCausalLM"\]; webtron reads MistralForCausalLM and MistralModel, not other heads/,
    );
    // A folder says which: Mistral's reads as the Llama model webtron sample --load builds.
    const folder = join(dir, 'mistral');
    cpSync(join(dir, 'llama-fp32'), folder, { recursive: true });
    writeFileSync(join(folder, 'config.json'), JSON.stringify({ ...mistral, sliding_window: null }));
    expect(hfGptConfig(folder)).toEqual(hfGptConfig(join(dir, 'llama-fp32')));
  });

  it('a model neither GPT-2 nor Llama holds is refused in one line naming both, nothing written', async () => {
    const mixed = join(dir, 'mixed');
    const trained = await train([
      ...['--num-layers', '1', '--hidden-size', '16', '--num-attention-heads', '2', '--seq-length', '8'],
      ...['--micro-batch-size', '2', '--train-iters', '1', '--lr', '1e-3', '--normalization', 'RMSNorm'],
      ...['--save', mixed, '--run-dir', join(dir, 'run-mixed')],
    ]);
    expect(trained.code, trained.stderr).toBe(0);
    const run = exportHf(mixed, join(dir, 'mixed-hf'));
    expect(run.status).toBe(2);
    expect(run.stderr.trim()).toMatch(
      /^webtron export: .*: the model has RMSNorm \(GPT-2 has LayerNorm\) and learned or no positions \(Llama has rope\): none of Hugging Face's GPT-2, Llama, Qwen2 and Qwen3 holds it; export it with --format onnx$/,
    );
    expect(existsSync(join(dir, 'mixed-hf', 'model.safetensors'))).toBe(false);
  });
});

describe("GPT-2 small's shape", () => {
  it("fp32 weights: the 147 MiB token table is read in windows where one binding cannot hold it; webtron's forward gives the referee's logits within fp32 rounding, and webtron sample --load writes text", async (context) => {
    skipWithoutTorch(context);
    const folder = join(dir, 'gpt2-small-fp32');
    const { seed, random } = seeded('hf gpt2 small fp32');
    const wrote = spawnSync(PYTHON, [REFEREE, 'write-random', folder, String(seed), '1', '768', '12', '64', '50257'], { encoding: 'utf8' });
    expect(wrote.status, wrote.stderr).toBe(0);
    const model = await loadHfFolderModel(ctx, folder);
    const table = model.gpt.param('wte.weight');
    // On a device whose binding holds the whole table, windows of 16,384 tokens instead.
    if (table.fitsOneBinding(ctx)) ctx.vocabWindowTokens = 16_384;
    else
      console.log(
        `the token table (${table.numel * 4} B) is over this device's binding limit (${ctx.limits.maxStorageBufferBindingSize} B)`,
      );
    let want: Float32Array;
    try {
      expect(vocabWindows(ctx, table).length).toBeGreaterThan(1);
      const [batch, t] = [2, 8];
      const ids = Uint32Array.from({ length: batch * t }, (_, i) =>
        i === 0 ? model.config.vocabSize - 1 : Math.floor(random() * model.config.vocabSize),
      );
      const g = new Graph(ctx, { training: false });
      want = await g.read(model.gpt.forward(g, g.input(ids, [batch, t])).logits);
      g.release();
      const { worst, largest } = logitsDifference(refereeLogits(REFEREE, folder, ids, batch), want);
      console.log(
        `GPT-2 small's shape, one block, fp32 weights: max abs difference of the logits ${worst.toExponential(2)} (largest logit ${largest.toFixed(2)})`,
      );
      // fp32 sums over 768 and 3,072 terms: rounding well under 1e-5 of the largest logit; a window's
      // wrong rows or columns would be of the order of the logits.
      expect(worst).toBeLessThanOrEqual(1e-5 * largest);
    } finally {
      ctx.vocabWindowTokens = Number.POSITIVE_INFINITY;
      model.params.destroy();
    }
    const sample = spawnSync(process.execPath, [BIN, 'sample', '--load', folder, '--prompt', 'the', '--tokens', '4', '--seed', '1'], {
      encoding: 'utf8',
    });
    expect(sample.status, sample.stderr).toBe(0);
    expect(sample.stdout.startsWith('the')).toBe(true);
  }, 120_000);

  it("random bf16 weights written by Python, read as --init-from reads them: webtron's bf16 forward gives the referee's fp32 logits within f16 rounding", async (context) => {
    skipWithoutTorch(context);
    const folder = join(dir, 'gpt2-small');
    const { seed, random } = seeded('hf gpt2 small');
    // Two of GPT-2 small's twelve blocks: the widths, token table and position count are its own.
    const wrote = spawnSync(PYTHON, [REFEREE, 'write-random', folder, String(seed), '2', '768', '12', '1024', '50257', 'BF16'], {
      encoding: 'utf8',
    });
    expect(wrote.status, wrote.stderr).toBe(0);
    const hf = readGpt2Config(folder);
    const config: GptConfig = {
      numLayers: hf.numLayers,
      hiddenSize: hf.hiddenSize,
      numAttentionHeads: hf.numAttentionHeads,
      seqLength: hf.maxPositionEmbeddings,
      maxPositionEmbeddings: hf.maxPositionEmbeddings,
      vocabSize: hf.vocabSize,
      tiedHead: hf.tiedHead,
    };
    const numel = (c: GptConfig) => gptParams(c).reduce((sum, s) => sum + s.shape.reduce((a, b) => a * b, 1), 0);
    expect(config.numLayers).toBe(2);
    expect(numel({ ...config, numLayers: 12 })).toBe(124_439_808);
    // bf16 params: GPT-2's 50,257 × 768 embedding is 147 MiB in fp32, over lavapipe's 128 MiB binding limit.
    const specs = Gpt.specs(config, 'bfloat16');
    const weights = openHfWeights(folder, specs, true);
    const params = new LocalParams(ctx, specs);
    for (const s of specs) params.set(new Map([[s.name, weights.read(s.name)]]));
    weights.close();
    const [batch, t] = [1, 24];
    const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * config.vocabSize));
    const g = new Graph(ctx, { training: false });
    const want = await g.read(new Gpt(config, params.tensors).forward(g, g.input(ids, [batch, t])).logits);
    g.release();
    params.destroy();
    const { worst, largest: scale } = logitsDifference(refereeLogits(REFEREE, folder, ids, batch), want);
    console.log(
      `GPT-2 small's shape, two blocks, bf16 weights: max abs difference of the logits ${worst.toExponential(2)} (largest logit ${scale.toFixed(2)})`,
    );
    // The 16-bit matmuls stage their operands as f16 (docs/gpu.md), activations included: 11
    // significant bits, so 1e-3 of the largest logit; a wrong name, layout or scale is of the order of the logits.
    expect(worst).toBeLessThanOrEqual(1e-3 * scale);

    // Training it needs the embedding's fp32 grad bound whole: over a 128 MiB binding limit
    // (lavapipe's) that is one line at start-up; under a larger one, one step runs.
    const run = await train([
      '--init-from',
      folder,
      '--bf16',
      '--seq-length',
      '16',
      '--micro-batch-size',
      '1',
      '--train-iters',
      '1',
      '--lr',
      '0',
      '--run-dir',
      join(dir, 'gpt2-small-run'),
    ]);
    if (50257 * 768 * 4 > ctx.limits.maxStorageBufferBindingSize) {
      expect(run.code).toBe(2);
      expect(run.stderr.trim()).toMatch(
        /^webtron train: param 'wte\.weight' \[50257, 768\] needs 147\.24 MiB for its fp32 grad, over this GPU's storage binding limit of [\d.]+ MiB; train a smaller model/,
      );
    } else expect(run.code, run.stderr).toBe(0);
  }, 180_000);
});

describe('webtron train --init-from a Hugging Face folder', () => {
  it('a random GPT-2 folder written by Python trains one step at lr 0 on 2 ranks and exports byte-identical in fp32', async (context) => {
    skipWithoutTorch(context);
    const src = join(dir, 'random');
    const { seed } = seeded('hf round trip');
    const wrote = spawnSync(PYTHON, [REFEREE, 'write-random', src, String(seed), '2', '32', '4', '24'], { encoding: 'utf8' });
    expect(wrote.status, wrote.stderr).toBe(0);
    const run = await train([
      '--init-from',
      src,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--seq-length',
      '16',
      '--micro-batch-size',
      '2',
      '--train-iters',
      '1',
      '--lr',
      '0',
      '--save',
      join(dir, 'random-ck'),
      '--run-dir',
      join(dir, 'random-run'),
    ]);
    expect(run.code, run.stderr).toBe(0);
    const out = join(dir, 'random-out');
    const exported = exportHf(join(dir, 'random-ck'), out);
    expect(exported.status, exported.stderr).toBe(0);
    const tensors = (path: string) => {
      const fd = openSync(path, 'r');
      const header = readHeader(fd, path);
      closeSync(fd);
      const bytes = readFileSync(path);
      const out = new Map<string, string>();
      for (const e of header.entries.values()) {
        const name = webtronName(e.name);
        if (name)
          out.set(
            name,
            `${e.dtype} ${e.shape.join('x')} ${bytes.subarray(header.dataStart + e.begin, header.dataStart + e.end).toString('hex')}`,
          );
      }
      return out;
    };
    const before = tensors(join(src, 'model.safetensors'));
    expect(before.size).toBe(2 + 2 * 12 + 2);
    expect(tensors(join(out, 'model.safetensors'))).toEqual(before);
    // The tokenizer travels too: GPT-2's files as they came.
    expect(JSON.parse(readFileSync(join(out, 'vocab.json'), 'utf8'))).toEqual(JSON.parse(readFileSync(join(src, 'vocab.json'), 'utf8')));
    expect(readFileSync(join(out, 'merges.txt'), 'utf8')).toBe(readFileSync(join(src, 'merges.txt'), 'utf8'));
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    const source = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
    for (const key of ['n_layer', 'n_embd', 'n_head', 'n_positions', 'vocab_size', 'eos_token_id'])
      expect(config[key], key).toBe(source[key]);
  }, 120_000);

  it('bad folders and contradicting flags are one line and exit 2', async () => {
    const good = join(dir, 'names-tied');
    const bad = (name: string, edit: (config: Record<string, unknown>) => void) => {
      const folder = join(dir, `bad-${name}`);
      cpSync(good, folder, { recursive: true });
      const file = join(folder, 'config.json');
      const config = JSON.parse(readFileSync(file, 'utf8'));
      edit(config);
      writeFileSync(file, JSON.stringify(config));
      return folder;
    };
    const noConfig = join(dir, 'bad-none');
    cpSync(good, noConfig, { recursive: true });
    rmSync(join(noConfig, 'config.json'));
    for (const [args, says] of [
      [['--init-from', noConfig], /bad-none has no readable config\.json \(ENOENT\); give a Hugging Face GPT-2 folder/],
      [
        ['--init-from', bad('shape', (c) => (c.n_positions = 20))],
        /the weights do not fit its config\.json: 'wpe\.weight' is \[16, 32\], config\.json makes it \[20, 32\]/,
      ],
      [['--init-from', bad('layers', (c) => (c.n_layer = 3))], /'blocks\.2\.ln_1\.weight' \[32\] is missing/],
      [
        ['--init-from', bad('scaled', (c) => (c.scale_attn_by_inverse_layer_idx = true))],
        /config\.json: scale_attn_by_inverse_layer_idx is true, which webtron does not compute/,
      ],
      [['--init-from', bad('upcast', (c) => (c.reorder_and_upcast_attn = true))], /reorder_and_upcast_attn is true/],
      [['--init-from', bad('relu', (c) => (c.activation_function = 'relu'))], /activation_function is "relu"/],
      [['--init-from', good, '--num-layers', '4'], /--num-layers 4 contradicts .*config\.json: n_layer is 2; leave the flag out/],
      [['--init-from', good, '--seq-length', '64'], /--seq-length 64 is longer than .*config\.json allows: n_positions is 16/],
      [
        ['--init-from', good, '--position-embedding-type', 'rope'],
        /--position-embedding-type rope contradicts .*config\.json: GPT-2 has learned positions \(wpe\); leave the flag out/,
      ],
      [['--init-from', good, '--swiglu'], /--swiglu contradicts .*config\.json: GPT-2 has a GELU MLP; leave the flag out/],
      [
        ['--init-from', good, '--qk-layernorm'],
        /--qk-layernorm contradicts .*config\.json: GPT-2 has no norms of q and k; leave the flag out/,
      ],
      [
        ['--init-from', good, '--kv-channels', '4'],
        /--kv-channels 4 contradicts .*config\.json: its heads are n_embd \/ n_head = \d+ wide; leave the flag out/,
      ],
      [
        ['--init-from', good, '--tokenizer-type', 'ByteTokenizer'],
        /--tokenizer-type ByteTokenizer contradicts --init-from .*: its files are a CharTokenizer/,
      ],
    ] as const) {
      // The first case runs bin/webtron.js as a user does; the rest run its main() in this process.
      const argv = ['train', '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0', ...args, '--run-dir', join(dir, 'bad-run')];
      const run = args[1] === noConfig ? spawnSync(process.execPath, [BIN, ...argv], { encoding: 'utf8' }) : await cliInProcess(argv, dir);
      expect(run.status, run.stderr).toBe(2);
      const lines = run.stderr.trim().split('\n');
      expect(lines, run.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(says);
    }
    expect(existsSync(join(dir, 'bad-run', 'metrics.jsonl'))).toBe(false);
  });
});

describe('fine-tuning from an exported folder', () => {
  it("a model trained on Moby-Dick's first half, exported and fine-tuned on the second half at d = 2, beats random init", async () => {
    const docs = mobyDick().documents;
    const half = Math.floor(docs.length / 2);
    const first = join(dir, 'first-half.txt');
    const second = join(dir, 'second-half.txt');
    writeFileSync(first, docs.slice(0, half).join('\n\n'));
    writeFileSync(second, docs.slice(half).join('\n\n'));
    const common = [
      '--seq-length',
      '64',
      '--hidden-dropout',
      '0',
      '--attention-dropout',
      '0',
      '--lr-warmup-iters',
      '5',
      '--lr-decay-style',
      'cosine',
    ];
    const pre = await train([
      ...common,
      '--data-path',
      first,
      '--tokenizer-type',
      'ByteTokenizer',
      '--num-layers',
      '2',
      '--hidden-size',
      '64',
      '--num-attention-heads',
      '4',
      '--micro-batch-size',
      '16',
      '--train-iters',
      '100',
      '--lr',
      '3e-3',
      '--eval-iters',
      '0',
      '--save',
      join(dir, 'first-ck'),
      '--run-dir',
      join(dir, 'first-run'),
    ]);
    expect(pre.code, pre.stderr).toBe(0);
    const folder = join(dir, 'first-hf');
    expect(exportHf(join(dir, 'first-ck'), folder).status).toBe(0);
    const fineTune = (init: string[], name: string) =>
      train([
        ...common,
        ...init,
        '--data-path',
        second,
        '--nproc-per-node',
        '2',
        '--use-distributed-optimizer',
        '--micro-batch-size',
        '8',
        '--train-iters',
        '20',
        '--lr',
        '1e-3',
        '--split',
        '90,10',
        '--eval-interval',
        '20',
        '--eval-iters',
        '8',
        '--run-dir',
        join(dir, name),
      ]);
    const tuned = await fineTune(['--init-from', folder], 'tuned');
    expect(tuned.code, tuned.stderr).toBe(0);
    const scratch = await fineTune(
      ['--tokenizer-type', 'ByteTokenizer', '--num-layers', '2', '--hidden-size', '64', '--num-attention-heads', '4'],
      'scratch',
    );
    expect(scratch.code, scratch.stderr).toBe(0);
    const validation = (out: string) => Number(/validation (\d+\.\d+)/.exec(out)?.[1]);
    const [a, b] = [validation(tuned.stdout), validation(scratch.stdout)];
    console.log(`validation loss on the second half after 20 iterations: fine-tuned ${a}, from random init ${b}`);
    expect(a).toBeLessThan(b);
  }, 300_000);
});
