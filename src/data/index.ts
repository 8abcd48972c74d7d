/**
 * `webtron/data`: tokenizers, Megatron's indexed datasets, preprocessing and GPT samples, for
 * programs that prepare or read training data themselves. docs/api/ lists every name.
 *
 * @module webtron/data
 */
export {
  ByteTokenizer,
  CharTokenizer,
  loadTokenizer,
  paddedVocabSize,
  readTokenizerFiles,
  TOKENIZER_TYPES,
  type Tokenizer,
  type TokenizerFiles,
  type TokenizerState,
  type TokenizerType,
} from './tokenizer.js';
export { DataError, IndexedDataset, IndexedDatasetBuilder, tokenDtypeFor } from './indexed.js';
export { preprocess, type PreprocessOptions, type PreprocessSummary } from './preprocess.js';
export type { ProgressDisplay } from '../progress.js';
export { BlendedGptSamples, IndexedGptSamples, openIndexedGptData, type GptSampleSource, type IndexedGptData } from './gpt-dataset.js';
export { BlendingIndex, parseDataPath, type DataPathEntry } from './blend.js';
export { GptSamples } from './samples.js';
