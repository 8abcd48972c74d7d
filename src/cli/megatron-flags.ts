/**
 * Megatron-LM flags that a training script carries but that change nothing webtron computes (CUDA
 * kernel fusions, PyTorch's allocator and DataLoader, tensor parallelism's options at size 1), and
 * Megatron flags for what webtron does not build. The first are accepted, and the run's first lines
 * name each with why it has no effect; the second are refused in one line that says why and what to
 * do, instead of "unknown flag". So a Megatron script runs as it is, or says exactly what to change.
 */
import type { FlagSpec } from './flags.js';

const FUSION = "a CUDA kernel-fusion switch; webtron's WGSL kernels fuse what they fuse";

/** Accepted, without effect here: the flag, its kind, and why it changes nothing. */
export const WITHOUT_EFFECT: Record<string, FlagSpec> = {
  'use-mcore-models': { kind: 'boolean', help: 'webtron has one GPT implementation' },
  'transformer-impl': {
    kind: 'string',
    help: "Megatron's layer implementations, local or Transformer Engine; webtron runs its own WGSL kernels",
  },
  'no-masked-softmax-fusion': { kind: 'boolean', help: FUSION },
  'no-bias-gelu-fusion': { kind: 'boolean', help: FUSION },
  'no-bias-swiglu-fusion': { kind: 'boolean', help: FUSION },
  'no-bias-dropout-fusion': { kind: 'boolean', help: FUSION },
  'no-rope-fusion': { kind: 'boolean', help: FUSION },
  'no-persist-layer-norm': { kind: 'boolean', help: FUSION },
  'no-gradient-accumulation-fusion': { kind: 'boolean', help: FUSION },
  'cross-entropy-loss-fusion': { kind: 'boolean', help: FUSION },
  'attention-softmax-in-fp32': { kind: 'boolean', help: "webtron's softmax is fp32 always" },
  'sequence-parallel': {
    kind: 'boolean',
    help: 'it splits activations within a tensor-parallel group, and webtron has none; Megatron turns it off at --tensor-model-parallel-size 1 too',
  },
  'no-create-attention-mask-in-dataloader': {
    kind: 'boolean',
    help: 'the attention kernels apply the causal mask themselves; no mask is built',
  },
  'manual-gc': { kind: 'boolean', help: "Python's garbage collector" },
  'manual-gc-interval': { kind: 'int', help: "Python's garbage collector" },
  'empty-unused-memory-level': { kind: 'int', help: "PyTorch's caching allocator; webtron's buffers are its own" },
  'num-workers': { kind: 'int', help: "PyTorch's DataLoader worker processes; webtron reads batches in the training process" },
  'no-mmap-bin-files': { kind: 'boolean', help: 'webtron reads .bin files by ranges, without mmap, either way' },
  'use-cpu-initialization': {
    kind: 'boolean',
    help: "Megatron's init that does not depend on the tensor-parallel size; webtron initializes every param whole, on the host, always",
  },
  'data-cache-path': { kind: 'string', help: "where Megatron caches its dataset's index files; webtron builds its sample order in memory" },
  'distributed-backend': { kind: 'string', help: "torch.distributed's backend, nccl or gloo; webtron's collectives are its own, over TCP" },
  'tiktoken-pattern': {
    kind: 'string',
    help: "TikTokenizer's pattern; webtron has no TikTokenizer, and with the other tokenizers Megatron ignores it too",
  },
  'init-model-with-meta-device': { kind: 'boolean', help: "PyTorch's meta device, to build a model before its memory; webtron has none" },
  'use-nccl-ub': { kind: 'boolean', help: "NCCL's user buffers; webtron's collectives are its own, over TCP" },
  'fsdp-double-buffer': {
    kind: 'boolean',
    help: "Megatron-FSDP's double-buffered NCCL memory; webtron's gathers stage through buffers of their own",
  },
  'fsdp-manual-registration': { kind: 'boolean', help: "NCCL buffer registration for Megatron-FSDP; webtron's collectives are its own" },
  'logging-level': {
    kind: 'int',
    help: "Python's logging level for Megatron's modules; webtron prints the lines Megatron prints, which no logging level holds back",
  },
  'record-memory-history': {
    kind: 'boolean',
    help: "PyTorch's CUDA allocator history; webtron prints its GPU bytes by category after the first iteration, beside the prediction",
  },
  'memory-snapshot-path': { kind: 'string', help: "where --record-memory-history's PyTorch snapshot goes; webtron writes none" },
  'deterministic-mode': {
    kind: 'boolean',
    help: "webtron's kernels and collectives add in a fixed order, with no atomics: a run repeats itself to the bit always",
  },
  'timing-log-level': { kind: 'int', help: "the detail of Megatron's timers; --timing times every phase of every iteration" },
  'timing-log-option': { kind: 'string', help: "how Megatron's timers combine ranks; --timing writes every rank's times" },
  'apply-query-key-layer-scaling': {
    kind: 'boolean',
    help: 'it divides fp16 scores by the layer number and multiplies them back in an fp32 softmax; webtron computes the softmax in fp32 from the scores as they are: the same probabilities',
  },
  'use-persistent-ckpt-worker': {
    kind: 'boolean',
    help: "torch_dist's save worker process; --async-save writes in the background of the training process",
  },
  'dist-ckpt-strictness': {
    kind: 'string',
    help: "how torch_dist treats keys a checkpoint lacks or adds; webtron's loads check every param by name and shape, and refuse a missing one",
  },
  'dist-ckpt-optim-fully-reshardable': {
    kind: 'boolean',
    help: "torch_dist's optimizer layout for another data-parallel size; webtron's optimizer state loads at any d always",
  },
  'auto-detect-ckpt-format': { kind: 'boolean', help: 'webtron reads its one checkpoint format' },
  'ckpt-fully-parallel-save': {
    kind: 'boolean',
    help: 'how torch_dist shares the writing among ranks; each rank writes its own pieces here',
  },
  'no-ckpt-fully-parallel-save': {
    kind: 'boolean',
    help: 'how torch_dist shares the writing among ranks; each rank writes its own pieces here',
  },
  'ckpt-fully-parallel-load': {
    kind: 'boolean',
    help: 'how torch_dist shares the reading among ranks; each rank reads only the ranges it needs here',
  },
  'ckpt-assume-constant-structure': { kind: 'boolean', help: "torch_dist's cached save plan; webtron plans each save from the layout" },
  'no-save-rng': {
    kind: 'boolean',
    help: 'webtron keeps no RNG state: the init, the data order and the dropout masks are functions of --seed and the sample index',
  },
  'no-load-rng': {
    kind: 'boolean',
    help: 'webtron keeps no RNG state: the init, the data order and the dropout masks are functions of --seed and the sample index',
  },
  'verify-integrity': {
    kind: 'boolean',
    help: "torch_dist's SHA-256 manifest of every file; webtron checks each 4 MiB block's CRC-32 against the index on every load",
  },
  'async-strategy': {
    kind: 'string',
    help: "which of Megatron's async checkpoint writers (nvrx or mcore); --async-save here has one writer per rank",
  },
  'test-mode': {
    kind: 'boolean',
    help: "Megatron's check in each forward that every rank holds the same q and k layer norms; --check-weight-hash-across-dp-replicas-interval compares every param across the replicas",
  },
  // Taken only as torch_dist (src/cli/train-flags.ts): the format Megatron writes when the flag is left out.
  'ckpt-format': {
    kind: 'string',
    help: "torch_dist, Megatron's default format; webtron writes its own files in Megatron's folder layout (docs/checkpoints.md), which Megatron's loaders do not read",
  },
};

const FP8 = 'WebGPU has no fp8 type; train in --bf16 (or --fp16)';
const MOE = 'webtron builds dense GPTs: no mixture of experts';

/** Known Megatron flags refused here: why, and what to do. */
export const REFUSED: Record<string, FlagSpec & { refused: string }> = {
  'fp8-format': { kind: 'string', help: FP8, refused: FP8 },
  'fp8-recipe': { kind: 'string', help: FP8, refused: FP8 },
  'fp8-margin': { kind: 'string', help: FP8, refused: FP8 },
  'fp8-amax-history-len': { kind: 'string', help: FP8, refused: FP8 },
  'fp8-amax-compute-algo': { kind: 'string', help: FP8, refused: FP8 },
  'fp8-param-gather': { kind: 'boolean', help: FP8, refused: FP8 },
  'num-experts': { kind: 'string', help: MOE, refused: MOE },
  'moe-router-topk': { kind: 'string', help: MOE, refused: MOE },
  'use-torch-fsdp2': {
    kind: 'boolean',
    help: "PyTorch's FSDP2",
    refused: "PyTorch's FSDP is not here; --use-megatron-fsdp shards grads and params the Megatron-FSDP way",
  },
  'wandb-project': {
    kind: 'string',
    help: 'Weights & Biases',
    refused: 'there is no Weights & Biases client; --tensorboard-dir writes event files, and webtron dashboard draws a run',
  },
};
