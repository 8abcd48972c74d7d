/**
 * The run's data, Megatron's build_train_valid_test_data_iterators: the tokenizer (from the checkpoint
 * a run resumes, else from the flags), and the train and validation samples of indexed datasets or a
 * text corpus. The same on every rank: a pure function of the corpus, the split and the seed.
 */
import { CheckpointError } from '../checkpoint/errors.js';
import { readCheckpointIndex } from '../checkpoint/checkpoint.js';
import { megatronCheckpointPath } from '../checkpoint/megatron.js';
import { mobyDick, splitTexts, textFile } from '../data/corpus.js';
import type { DataPathEntry } from '../data/blend.js';
import { dataKind, openIndexedGptData, type GptSampleSource, type IndexedGptData } from '../data/gpt-dataset.js';
import { IndexedDataset } from '../data/indexed.js';
import { GptSamples } from '../data/samples.js';
import { ByteTokenizer, CharTokenizer, loadTokenizer, NullTokenizer, readTokenizerFiles, type Tokenizer } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import { readFolderTokenizer } from '../hf/tokenizer.js';
import { MockDocuments } from '../data/mock.js';
import { IGNORED_TARGET } from '../nn/ops.js';
import { type Documents, documentInputs, documentStarts, NO_DOCUMENTS } from '../nn/documents.js';
import type { Graph } from '../nn/graph.js';
import { type GptShape, learnedPositions } from '../nn/gpt-spec.js';
import { isFolder } from '../hf/weights.js';
import type { TrainConfig } from './config.js';
import { type TrainerState, TrainingError } from './state.js';

/** What openData gives the trainer. */
export interface TrainData {
  tokenizer: Tokenizer;
  /** The corpus or blend, for the log and the chart. */
  name: string;
  train: GptSampleSource;
  valid: GptSampleSource | null;
  /** The test split's samples, evaluated once at the end of training; null where it holds none. */
  test: GptSampleSource | null;
  trainTokens: number;
  validTokens: number;
  testTokens: number;
  /** Tokens the unigram and bigram entropies are estimated from. */
  head: ArrayLike<number>;
  close(): void;
}

const CHAR_NEEDS_TEXT =
  'tokenizerType: CharTokenizer builds its vocabulary from a text corpus, and --data-path names an indexed dataset; give the --tokenizer-type it was made with';

/**
 * The tokenizer a run uses: from the checkpoint it resumes, else from the Hugging Face folder
 * --init-from names, else from the flags (CharTokenizer: built from the corpus text).
 */
async function tokenizerFor(cfg: TrainConfig, text: string | null): Promise<Tokenizer> {
  const tokenizer = await tokenizerOf(cfg, text);
  if (cfg.tokenizerVocabSize !== null && tokenizer.vocabSize !== cfg.tokenizerVocabSize)
    throw new ConfigError(
      tokenizer.type === 'NullTokenizer'
        ? `tokenizerVocabSize: --vocab-size is ${cfg.tokenizerVocabSize}, but the checkpoint's NullTokenizer has ${tokenizer.vocabSize} ids; give --vocab-size ${tokenizer.vocabSize}`
        : `tokenizerVocabSize: --vocab-size is ${cfg.tokenizerVocabSize}, but ${tokenizer.type} has ${tokenizer.vocabSize} tokens; leave --vocab-size out (the tokenizer brings its vocabulary)`,
      'tokenizerVocabSize',
    );
  return tokenizer;
}

async function tokenizerOf(cfg: TrainConfig, text: string | null): Promise<Tokenizer> {
  if (cfg.load) {
    const { dir, index } = readCheckpointIndex(cfg.load);
    const extra = index.extra as Partial<TrainerState>;
    if (!extra.tokenizer)
      throw new CheckpointError(`${dir}: not a checkpoint of webtron train (index.json has no tokenizer); --load needs one`);
    if (extra.tokenizer.type !== cfg.tokenizerType)
      throw new CheckpointError(`${dir}: saved with ${extra.tokenizer.type}, but --tokenizer-type is ${cfg.tokenizerType}`);
    return loadTokenizer(extra.tokenizer);
  }
  const hfFolder = cfg.initFrom !== null && isFolder(cfg.initFrom) && megatronCheckpointPath(cfg.initFrom) === null;
  const folder = hfFolder ? await readFolderTokenizer(cfg.initFrom!) : null;
  if (folder) return loadTokenizer(folder);
  switch (cfg.tokenizerType) {
    case 'CharTokenizer':
      if (text === null) throw new ConfigError(CHAR_NEEDS_TEXT, 'tokenizerType');
      return CharTokenizer.fromText(text);
    case 'ByteTokenizer':
      return new ByteTokenizer();
    case 'NullTokenizer':
      return new NullTokenizer(cfg.tokenizerVocabSize!);
    default:
      return loadTokenizer(readTokenizerFiles(cfg.tokenizerType, cfg));
  }
}

/**
 * What --data-path names, checked without reading the data: indexed datasets (each index read and
 * checked), or one text file. The launcher runs it before any worker starts, so a bad path is one
 * line, not one per rank.
 */
export function checkDataPath(cfg: TrainConfig): 'indexed' | 'text' | 'moby-dick' {
  if (cfg.splitDataBlends) return checkSplitDataPaths(cfg);
  const blend = cfg.dataBlend;
  if (!blend) return 'moby-dick';
  const kinds = blend.map((e) => dataKind(e.path));
  const missing = kinds.indexOf(null);
  if (missing >= 0)
    throw new ConfigError(
      `dataPath: ${blend[missing]!.path} is neither a text file nor the prefix of an indexed dataset (${blend[missing]!.path}.bin and .idx)`,
      'dataPath',
    );
  if (kinds[0] === 'text') {
    if (blend.length > 1)
      throw new ConfigError(
        `dataPath: ${blend[0]!.path} is a text file; a blend takes indexed datasets only (make them with webtron preprocess-data)`,
        'dataPath',
      );
    return 'text';
  }
  const text = kinds.indexOf('text');
  if (text >= 0) throw new ConfigError(`dataPath: ${blend[text]!.path} is a text file; a blend takes indexed datasets only`, 'dataPath');
  for (const e of blend) IndexedDataset.open(e.path).close();
  checkIndexedTokenizer(cfg);
  return 'indexed';
}

/** An indexed dataset's tokenizer cannot come from its text: the flags (or the checkpoint) must name it. */
function checkIndexedTokenizer(cfg: TrainConfig): void {
  if (cfg.tokenizerType === 'CharTokenizer' && !cfg.load) throw new ConfigError(CHAR_NEEDS_TEXT, 'tokenizerType');
  if (cfg.tokenizerType === 'GPT2BPETokenizer' || cfg.tokenizerType === 'HuggingFaceTokenizer') readTokenizerFiles(cfg.tokenizerType, cfg);
}

/** --train-data-path, --valid-data-path, --test-data-path: indexed datasets only, each index read and checked. */
function checkSplitDataPaths(cfg: TrainConfig): 'indexed' {
  for (const [part, blend] of Object.entries(cfg.splitDataBlends!)) {
    const option = `${part}DataPath`;
    for (const e of blend ?? []) {
      if (dataKind(e.path) !== 'indexed')
        throw new ConfigError(
          `${option}: ${e.path} is not the prefix of an indexed dataset (${e.path}.bin and .idx); make one with webtron preprocess-data`,
          option,
        );
      IndexedDataset.open(e.path).close();
    }
  }
  checkIndexedTokenizer(cfg);
  return 'indexed';
}

/**
 * The run's samples: indexed datasets (--data-path PREFIX or a blend), else a text corpus (a file, or
 * Moby-Dick); with --eod-mask-loss, every split's targets masked where the input is the end of a
 * document; with --reset-position-ids or --reset-attention-mask, every batch with its documents' starts.
 */
export async function openData(cfg: TrainConfig): Promise<TrainData> {
  const data = await openSamples(cfg);
  const given = EOD_FLAGS.filter((f) => cfg[f.field]);
  if (given.length === 0) return data;
  const eod = data.tokenizer.eod;
  const first = given[0]!;
  if (eod === null) {
    data.close();
    throw new ConfigError(
      `${first.field}: ${data.tokenizer.type} has no end-of-document token ${first.purpose}; leave out ${given.map((f) => f.flag).join(' and ')}, or train with a tokenizer that has one (GPT2BPETokenizer)`,
      first.field,
    );
  }
  // Opened above, so the data is mock, indexed datasets throughout or one text: the first path says which.
  if (!cfg.mockData && !cfg.splitDataBlends && (!cfg.dataBlend || dataKind(cfg.dataBlend[0]!.path) === 'text')) {
    data.close();
    throw new ConfigError(
      `${first.field}: ${data.name} is text, whose documents are joined without end-of-document tokens, so ${first.nothing}; make an indexed dataset with webtron preprocess-data --append-eod and train on it`,
      first.field,
    );
  }
  const documents = cfg.resetPositionIds || cfg.resetAttentionMask;
  const wrap = (source: GptSampleSource | null) => {
    if (!source) return null;
    const inDocuments = documents ? withDocumentStarts(source, eod) : source;
    return cfg.eodMaskLoss ? eodMasked(inDocuments, eod) : inDocuments;
  };
  return { ...data, train: wrap(data.train)!, valid: wrap(data.valid), test: wrap(data.test) };
}

/** The flags that need end-of-document tokens in the data, with what their errors say. */
const EOD_FLAGS = [
  { field: 'eodMaskLoss', flag: '--eod-mask-loss', purpose: 'to mask', nothing: 'nothing would be masked' },
  { field: 'resetPositionIds', flag: '--reset-position-ids', purpose: 'to restart positions at', nothing: 'no position would restart' },
  { field: 'resetAttentionMask', flag: '--reset-attention-mask', purpose: 'to end attention at', nothing: 'no attention would end' },
] as const;

/** `source` with each batch passed through `f`. */
function mapBatches(
  source: GptSampleSource,
  f: (batch: ReturnType<GptSampleSource['batch']>) => ReturnType<GptSampleSource['batch']>,
): GptSampleSource {
  return { count: source.count, seqLength: source.seqLength, batch: (first, n) => f(source.batch(first, n)) };
}

/**
 * Megatron's --eod-mask-loss: `source` with the target IGNORED_TARGET wherever the input token is
 * `eod`, so that predicting a document's first token from the previous one's end adds no loss.
 */
export function eodMasked(source: GptSampleSource, eod: number): GptSampleSource {
  return mapBatches(source, (batch) => {
    const { ids, targets } = batch;
    for (let i = 0; i < ids.length; i++) if (ids[i] === eod) targets[i] = IGNORED_TARGET;
    return batch;
  });
}

/** `source` whose batches say where each input token's document starts (src/nn/documents.ts). */
export function withDocumentStarts(source: GptSampleSource, eod: number): GptSampleSource {
  return mapBatches(source, (batch) => ({ ...batch, starts: documentStarts(batch.ids, source.seqLength, eod) }));
}

/**
 * What --reset-position-ids and --reset-attention-mask restart for `model`: positions only where it
 * has a learned position table (rope rotates by the place in the sample, as Megatron's does).
 */
export function documentResets(cfg: TrainConfig, model: GptShape): { positions: boolean; attention: boolean } {
  return { positions: cfg.resetPositionIds && learnedPositions(model), attention: cfg.resetAttentionMask };
}

/** The graph inputs of a batch's documents (none without --reset-position-ids and --reset-attention-mask). */
export function batchDocuments(g: Graph, cfg: TrainConfig, model: GptShape, starts: Uint32Array | undefined): Documents {
  if (!starts) return NO_DOCUMENTS;
  return documentInputs(g, starts, cfg.seqLength, documentResets(cfg, model));
}

/** The number of targets that are not masked (IGNORED_TARGET): the tokens a micro-batch's loss is the mean over. */
export function countedTargets(targets: Uint32Array): number {
  let n = 0;
  for (const t of targets) if (t !== IGNORED_TARGET) n += 1;
  return n;
}

async function openSamples(cfg: TrainConfig): Promise<TrainData> {
  if (cfg.mockData) return openMockData(cfg);
  if (cfg.splitDataBlends) {
    checkSplitDataPaths(cfg);
    return openSplitData(cfg, cfg.splitDataBlends);
  }
  const blend = cfg.dataBlend;
  if (blend && checkDataPath(cfg) === 'indexed') {
    const tokenizer = await tokenizerFor(cfg, null);
    const data = openIndexedGptData(blend, { split: cfg.split, seqLength: cfg.seqLength, seed: cfg.seed, vocabSize: tokenizer.vocabSize });
    return {
      tokenizer,
      name: data.name,
      train: data.train,
      valid: data.valid,
      test: data.test,
      trainTokens: data.trainTokens,
      validTokens: data.validTokens,
      testTokens: data.testTokens,
      head: data.head,
      close: () => {
        for (const d of data.datasets) d.close();
      },
    };
  }
  const corpus = blend ? textFile(blend[0]!.path) : mobyDick();
  const texts = splitTexts(corpus, cfg.split);
  if (!texts.train)
    throw new TrainingError(
      `the train split of ${corpus.name} is empty: --split ${cfg.split.join(',')} over ${corpus.documents.length} documents`,
    );
  const tokenizer = await tokenizerFor(cfg, `${texts.train}${texts.valid}${texts.test}`);
  const trainTokens = tokenizer.encode(texts.train);
  const validTokens = texts.valid ? tokenizer.encode(texts.valid) : null;
  const testTokens = texts.test ? tokenizer.encode(texts.test) : null;
  // A held-out split in order, or null where it has no sample of seqLength + 1 tokens.
  const heldOut = (tokens: Uint32Array | null) =>
    tokens && tokens.length > cfg.seqLength ? (new GptSamples(tokens, cfg.seqLength, cfg.seed, false) as GptSampleSource) : null;
  return {
    tokenizer,
    name: corpus.name,
    train: new GptSamples(trainTokens, cfg.seqLength, cfg.seed, true) as GptSampleSource,
    valid: heldOut(validTokens),
    test: heldOut(testTokens),
    trainTokens: trainTokens.length,
    validTokens: validTokens?.length ?? 0,
    testTokens: testTokens?.length ?? 0,
    head: trainTokens,
    close: () => undefined,
  };
}

/** --mock-data: Megatron's mock documents, split, ordered and cut into samples as an indexed dataset's. */
async function openMockData(cfg: TrainConfig): Promise<TrainData> {
  const tokenizer = await tokenizerFor(cfg, null);
  const eod = tokenizer.eod;
  if (eod === null)
    throw new ConfigError(
      `mockData: ${tokenizer.type} has no end-of-document token to close the mock documents with; give --tokenizer-type NullTokenizer --vocab-size N, or a tokenizer that has one`,
      'mockData',
    );
  const data = openIndexedGptData(
    [{ path: 'mock data', weight: null }],
    { split: cfg.split, seqLength: cfg.seqLength, seed: cfg.seed, vocabSize: tokenizer.vocabSize },
    () => new MockDocuments(tokenizer.vocabSize, eod),
  );
  return { tokenizer, ...data, close: () => undefined };
}

/** Megatron's per-split data: each split's blend used whole, validation and test in order. */
async function openSplitData(cfg: TrainConfig, blends: NonNullable<TrainConfig['splitDataBlends']>): Promise<TrainData> {
  const tokenizer = await tokenizerFor(cfg, null);
  const options = { seqLength: cfg.seqLength, seed: cfg.seed, vocabSize: tokenizer.vocabSize };
  const opened: IndexedGptData[] = [];
  const close = () => {
    for (const d of opened) for (const dataset of d.datasets) dataset.close();
  };
  const open = (blend: DataPathEntry[] | null, split: [number, number, number], heldOut: boolean) => {
    if (!blend) return null;
    const data = openIndexedGptData(blend, { ...options, split, heldOut });
    opened.push(data);
    return data;
  };
  try {
    const train = open(blends.train, [1, 0, 0], false)!;
    const valid = open(blends.valid, [0, 1, 0], true);
    const test = open(blends.test, [0, 0, 1], true);
    return {
      tokenizer,
      name: train.name,
      train: train.train,
      valid: valid?.valid ?? null,
      test: test?.test ?? null,
      trainTokens: train.trainTokens,
      validTokens: valid?.validTokens ?? 0,
      testTokens: test?.testTokens ?? 0,
      head: train.head,
      close,
    };
  } catch (error) {
    close(); // the splits opened before the one that failed
    throw error;
  }
}
