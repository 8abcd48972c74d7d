/**
 * webtron's GPT as a standard ONNX graph (opset 17): input `input_ids` int64 [batch, sequence],
 * output `logits` float [batch, sequence, vocab], both axes dynamic, the params as initializers.
 * The graph computes what src/nn/gpt.ts computes: Gather embeddings, pre-LN blocks with
 * LayerNormalization, a fused qkv MatMul split into heads (q and k rotated, with rope), a causal mask from Range and Greater,
 * Softmax, GELU in its tanh form (GPT-2's, written out: opset 17 has no Gelu; Relu squared with --squared-relu), and the head through
 * the (transposed) token embedding or its own lm_head. Initializers carry Hugging Face's GPT-2 names
 * (`h.0.attn.c_attn.weight`; src/hf/gpt2.ts), the names `webtron export --format hf` writes.
 */
import { hfName } from '../hf/gpt2.js';
import type { GptConfig } from '../nn/gpt.js';
import {
  attentionWidth,
  gptParams,
  headDim,
  learnedPositions,
  linearBias,
  normBias,
  normEpsilon,
  qkvBias,
  queryGroups,
  rotaryDim,
} from '../nn/gpt-spec.js';
import { rotaryTable } from '../nn/rope.js';
import {
  type Attributes,
  encodeModel,
  floatTensor,
  int64Tensor,
  type NodeProto,
  node,
  OnnxError,
  onnx,
  type TensorProto,
  valueInfo,
} from './proto.js';

const { DataType } = onnx.TensorProto;

export interface GptOnnxOptions {
  /** Initializers as IEEE half (the graph then computes in float16). Default float32. */
  float16?: boolean;
  /** Key/value pairs stored in the model's metadata_props (config, tokenizer). */
  metadata?: Record<string, string>;
}

/** protobuf's limit on one message: a model past it keeps its weights in ONNX's external data. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1;
/** External data offsets are multiples of this (a page: the weights can be memory-mapped). */
const EXTERNAL_ALIGN = 4096;

/** The ONNX model of a GPT with these float32 param values (by webtron's param names), weights inline. */
export function gptToOnnx(config: GptConfig, params: Map<string, Float32Array>, options: GptOnnxOptions = {}): Uint8Array {
  return buildGptOnnx(config, params, options, null).model;
}

/**
 * The same model with every weight of 1 KiB or more in ONNX's external data: `data` (chunks, in
 * order) is the file `location` names, relative to the model's folder. For models past 2 GiB.
 */
export function gptToOnnxExternal(
  config: GptConfig,
  params: Map<string, Float32Array>,
  location: string,
  options: GptOnnxOptions = {},
): { model: Uint8Array; data: Uint8Array[] } {
  return buildGptOnnx(config, params, options, location);
}

/**
 * Rope on heads [B, H, T, hd] as Megatron writes it: x·cos + rotate_half(x)·sin over the first rot
 * channels (halves swapped, or neighbours with rotaryInterleaved, the first of each pair negated), the
 * rest passed; cos and sin of every position the model holds as initializers, gathered at the
 * sequence's positions. The identity without rope.
 */
function rotaryOnnx(
  config: GptConfig,
  positions: string,
  op: (type: string, inputs: string[], attributes?: Attributes) => string,
  constant: (name: string, dims: number[], values: number[], int?: boolean) => string,
): (x: string) => string {
  const rot = rotaryDim(config);
  if (rot === 0) return (x) => x;
  const hd = headDim(config);
  const half = rot / 2;
  const longest = config.maxPositionEmbeddings ?? config.seqLength;
  // Per position, Megatron's emb: each pair's angle at both of its channels.
  const table = rotaryTable(config, longest);
  const cos: number[] = [];
  const sin: number[] = [];
  for (let p = 0; p < longest; p++) {
    for (let j = 0; j < rot; j++) {
      const pair = config.rotaryInterleaved ? j >> 1 : j % half;
      cos.push(table[(p * half + pair) * 2]!);
      sin.push(table[(p * half + pair) * 2 + 1]!);
    }
  }
  const cosAt = op('Gather', [constant('rope.cos', [longest, rot], cos), positions], { axis: 0 });
  const sinAt = op('Gather', [constant('rope.sin', [longest, rot], sin), positions], { axis: 0 });
  const made = new Map<string, string>();
  const ints = (name: string, values: number[]) => {
    if (!made.has(name)) made.set(name, constant(`const.rope.${name}`, [values.length], values, true));
    return made.get(name)!;
  };
  const last = ints('last_axis', [-1]);
  const slice = (x: string, from: number, to: number, axis = last) =>
    op('Slice', [x, ints(`at_${from}`, [from]), ints(`at_${to}`, [to]), axis]);
  const rotateHalf = (x: string): string => {
    if (!config.rotaryInterleaved) return op('Concat', [op('Neg', [slice(x, half, rot)]), slice(x, 0, half)], { axis: -1 });
    const pairs = op('Reshape', [x, ints('pairs', [0, 0, 0, half, 2])]);
    const swapped = op('Concat', [op('Neg', [slice(pairs, 1, 2)]), slice(pairs, 0, 1)], { axis: -1 });
    return op('Reshape', [swapped, ints('unpairs', [0, 0, 0, rot])]);
  };
  return (x) => {
    const xr = rot < hd ? slice(x, 0, rot) : x;
    const rotated = op('Add', [op('Mul', [xr, cosAt]), op('Mul', [rotateHalf(xr), sinAt])]);
    return rot < hd ? op('Concat', [rotated, slice(x, rot, hd)], { axis: -1 }) : rotated;
  };
}

function buildGptOnnx(
  config: GptConfig,
  params: Map<string, Float32Array>,
  options: GptOnnxOptions,
  location: string | null,
): { model: Uint8Array; data: Uint8Array[] } {
  const float16 = options.float16 ?? false;
  const elem = float16 ? DataType.FLOAT16 : DataType.FLOAT;
  // q of every head, and the attention's output: H·hd wide (the hidden size unless --kv-channels).
  const c = attentionWidth(config);
  const heads = config.numAttentionHeads;
  const hd = headDim(config);
  const nodes: NodeProto[] = [];
  const initializers: TensorProto[] = [];
  for (const spec of gptParams(config)) {
    const values = params.get(spec.name);
    const numel = spec.shape.reduce((a, b) => a * b, 1);
    if (!values || values.length !== numel) {
      throw new OnnxError(
        `param '${spec.name}' needs ${numel} values (shape [${spec.shape.join(', ')}]), got ${values ? values.length : 'none'}`,
      );
    }
    initializers.push(floatTensor(hfName(spec.name), spec.shape, values, float16));
  }
  let count = 0;
  /** Add a node with `outputs` outputs; returns their names. */
  const opN = (type: string, inputs: string[], attributes: Attributes, outputs: number): string[] => {
    const name = `${type.toLowerCase()}_${count++}`;
    const outs = Array.from({ length: outputs }, (_, i) => (outputs === 1 ? name : `${name}_${i}`));
    nodes.push(node(type, inputs, outs, name, attributes));
    return outs;
  };
  /** Add a node; returns its output's name. */
  const op = (type: string, inputs: string[], attributes: Attributes = {}): string => opN(type, inputs, attributes, 1)[0]!;
  const constant = (name: string, dims: number[], values: number[], int = false): string => {
    initializers.push(int ? int64Tensor(name, dims, values) : floatTensor(name, dims, Float32Array.from(values), float16));
    return name;
  };
  const linear = (x: string, w: string, b?: string) => (b ? op('Add', [op('MatMul', [x, w]), b]) : op('MatMul', [x, w]));
  const epsilon = normEpsilon(config);
  const eps = normBias(config) ? '' : constant('const.eps', [], [epsilon]);
  // LayerNormalization, or RMSNorm written out (opset 17 has no RMSNormalization): x / sqrt(mean(x²) + eps) · w.
  // Zero-centered weights (--apply-layernorm-1p): the initializer holds gamma - 1, and the graph adds the 1.
  const gammaOne = config.applyLayernorm1p ? constant('const.gamma_one', [], [1]) : '';
  const gamma = (prefix: string) => (gammaOne ? op('Add', [hfName(`${prefix}.weight`), gammaOne]) : hfName(`${prefix}.weight`));
  const layerNorm = (x: string, prefix: string) =>
    normBias(config)
      ? op('LayerNormalization', [x, gamma(prefix), hfName(`${prefix}.bias`)], { axis: -1, epsilon: { float: epsilon } })
      : op('Mul', [
          op('Div', [x, op('Sqrt', [op('Add', [op('ReduceMean', [op('Mul', [x, x])], { axes: [-1], keepdims: 1 }), eps])])]),
          gamma(prefix),
        ]);
  const bias = (name: string, has: boolean) => (has ? hfName(name) : undefined);

  // Embeddings: tokens plus positions 0..T-1.
  const zero = constant('const.zero', [], [0], true);
  const one = constant('const.one', [], [1], true);
  const seqLen = op('Gather', [op('Shape', ['input_ids']), one], { axis: 0 });
  const positions = op('Range', [zero, seqLen, one]);
  const tokens = op('Gather', [hfName('wte.weight'), 'input_ids'], { axis: 0 });
  let x = learnedPositions(config) ? op('Add', [tokens, op('Gather', [hfName('wpe.weight'), positions], { axis: 0 })]) : tokens;

  // The causal mask: position j > i is the future of i.
  const axis0 = constant('const.axis0', [1], [0], true);
  const axis1 = constant('const.axis1', [1], [1], true);
  const future = op('Greater', [op('Unsqueeze', [positions, axis0]), op('Unsqueeze', [positions, axis1])]);
  const minusInf = constant('const.minus_inf', [], [Number.NEGATIVE_INFINITY]);
  const scale = constant('const.scale', [], [1 / Math.sqrt(hd)]);
  const groups = queryGroups(config);
  const split = constant('const.qkv_split', [3], [c, groups * hd, groups * hd], true);
  const toHeads = constant('const.to_heads', [4], [0, 0, heads, hd], true);
  const fromHeads = constant('const.from_heads', [3], [0, 0, c], true);
  // Grouped-query attention: each group's k or v gathered for its query heads (transformers' repeat_kv).
  const grouped =
    groups < heads
      ? {
          perGroup: constant('const.to_groups', [4], [0, 0, groups, hd], true),
          headGroup: constant(
            'const.head_group',
            [heads],
            Array.from({ length: heads }, (_, h) => Math.floor(h / (heads / groups))),
            true,
          ),
        }
      : null;
  const repeatKv = (t: string): string =>
    grouped ? op('Reshape', [op('Gather', [op('Reshape', [t, grouped.perGroup]), grouped.headGroup], { axis: 2 }), fromHeads]) : t;
  const half = constant('const.half', [], [0.5]);
  const unit = constant('const.one_f', [], [1]);
  const geluK = constant('const.gelu_k', [], [Math.sqrt(2 / Math.PI)]);
  const geluC = constant('const.gelu_c', [], [0.044715]);

  const rope = rotaryOnnx(config, positions, op, constant);

  for (let l = 0; l < config.numLayers; l++) {
    const b = `blocks.${l}`;
    const qkv = linear(layerNorm(x, `${b}.ln_1`), hfName(`${b}.attn.qkv.weight`), bias(`${b}.attn.qkv.bias`, qkvBias(config)));
    const [qs, kg, vg] = opN('Split', [qkv, split], { axis: -1 }, 3) as [string, string, string];
    const [ks, vs] = [repeatKv(kg), repeatKv(vg)];
    const heads4 = (t: string, perm: number[]) => op('Transpose', [op('Reshape', [t, toHeads])], { perm });
    // --qk-layernorm: each head of q and of k normalized over its channels before rope.
    const headNorm = (t: string, part: string) => (config.qkLayernorm ? layerNorm(t, `${b}.attn.ln_${part}`) : t);
    const [q, k] = [headNorm(heads4(qs, [0, 2, 1, 3]), 'q'), headNorm(heads4(ks, [0, 2, 1, 3]), 'k')].map(rope) as [string, string];
    const scores = op('Mul', [op('MatMul', [q, op('Transpose', [k], { perm: [0, 1, 3, 2] })]), scale]);
    const probs = op('Softmax', [op('Where', [future, minusInf, scores])], { axis: -1 });
    const y = op('Reshape', [op('Transpose', [op('MatMul', [probs, heads4(vs, [0, 2, 1, 3])])], { perm: [0, 2, 1, 3] }), fromHeads]);
    x = op('Add', [x, linear(y, hfName(`${b}.attn.proj.weight`), bias(`${b}.attn.proj.bias`, linearBias(config)))]);
    const f = linear(layerNorm(x, `${b}.ln_2`), hfName(`${b}.mlp.fc.weight`), bias(`${b}.mlp.fc.bias`, linearBias(config)));
    let g: string;
    if (config.swiglu) {
      // SwiGLU: silu(gate) · value, the gate the first half of fc's columns.
      const [gate, value] = opN('Split', [f], { axis: -1 }, 2) as [string, string];
      g = op('Mul', [op('Mul', [gate, op('Sigmoid', [gate])]), value]);
    } else if (config.squaredRelu) {
      const r = op('Relu', [f]);
      g = op('Mul', [r, r]);
    } else {
      // GELU, tanh form: 0.5 f (1 + tanh(sqrt(2/pi) (f + 0.044715 f³)))
      const cube = op('Mul', [f, op('Mul', [f, f])]);
      const inner = op('Mul', [geluK, op('Add', [f, op('Mul', [geluC, cube])])]);
      g = op('Mul', [op('Mul', [half, f]), op('Add', [unit, op('Tanh', [inner])])]);
    }
    x = op('Add', [x, linear(g, hfName(`${b}.mlp.proj.weight`), bias(`${b}.mlp.proj.bias`, linearBias(config)))]);
  }
  const head = hfName(config.tiedHead === false ? 'lm_head.weight' : 'wte.weight');
  const final = layerNorm(x, 'ln_f');
  nodes.push(node('MatMul', [final, op('Transpose', [head], { perm: [1, 0] })], ['logits'], 'head'));

  const data: Uint8Array[] = [];
  if (location !== null) {
    let offset = 0;
    for (const t of initializers) {
      const bytes = t.rawData;
      if (!bytes || bytes.byteLength < 1024) continue;
      const pad = (EXTERNAL_ALIGN - (offset % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
      if (pad > 0) data.push(new Uint8Array(pad));
      offset += pad;
      data.push(bytes);
      t.rawData = new Uint8Array(0);
      t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      t.externalData = [
        { key: 'location', value: location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.byteLength) },
      ];
      offset += bytes.byteLength;
    }
  } else {
    const inline = initializers.reduce((sum, t) => sum + (t.rawData?.byteLength ?? 0), 0);
    if (inline > PROTOBUF_LIMIT) {
      throw new OnnxError(
        `${inline} bytes of weights exceed protobuf's 2 GiB in one file; write them as external data (gptToOnnxExternal)`,
      );
    }
  }
  const model = encodeModel(
    {
      name: 'webtron-gpt',
      nodes,
      inputs: [valueInfo('input_ids', DataType.INT64, ['batch', 'sequence'])],
      outputs: [valueInfo('logits', elem, ['batch', 'sequence', config.vocabSize])],
      initializers,
    },
    options.metadata ?? {},
  );
  return { model, data };
}
