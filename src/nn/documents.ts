/**
 * Documents inside a sample (Megatron's --reset-position-ids and --reset-attention-mask): a sample
 * of packed documents is split after each end-of-document token. The end-of-document token is the
 * last token of its document; the token after it starts the next one. With reset positions, each
 * token's learned position is its place in its document; with a reset attention mask, a token
 * attends only to the tokens of its own document at or before it. Megatron's rules
 * (_get_ltor_masks_and_position_ids in megatron/core/datasets/gpt_dataset.py), over the input tokens.
 *
 * Rope needs nothing: Megatron rotates by the place in the sample whatever the position ids, and
 * rotations enter the scores only as the distance between query and key, which documents keep.
 */
import type { Graph } from './graph.js';
import { ShapeMismatch, type Tensor } from './tensor.js';

/** A graph's document inputs (Graph.documents); null where the flag is off. */
export interface Documents {
  /** uint32 [B, T]: each token's position in its document, for the learned position table. */
  positions: Tensor | null;
  /** uint32 [B · T]: for each token, where in its sample its document starts: keys before it are masked. */
  starts: Tensor | null;
}

export const NO_DOCUMENTS: Documents = { positions: null, starts: null };

/** For each of the `ids` (samples of `seqLength` tokens, back to back), where in its sample its document starts. */
export function documentStarts(ids: Uint32Array, seqLength: number, eod: number): Uint32Array {
  if (seqLength < 1 || ids.length % seqLength !== 0)
    throw new ShapeMismatch(`documents: ${ids.length} ids are not whole samples of ${seqLength} tokens`);
  const starts = new Uint32Array(ids.length);
  for (let s = 0; s < ids.length; s += seqLength) {
    let start = 0;
    for (let t = 0; t < seqLength; t++) {
      starts[s + t] = start;
      if (ids[s + t] === eod) start = t + 1;
    }
  }
  return starts;
}

/** Each token's position in its document, from documentStarts' `starts`. */
export function documentPositions(starts: Uint32Array, seqLength: number): Uint32Array {
  return starts.map((start, i) => (i % seqLength) - start);
}

/**
 * The graph inputs of a micro-batch whose tokens' documents start at `starts` (documentStarts, [B · T]):
 * the positions with `positions` (read only by a learned position table), the starts with `attention`.
 */
export function documentInputs(
  g: Graph,
  starts: Uint32Array,
  seqLength: number,
  reset: { positions: boolean; attention: boolean },
): Documents {
  if (!reset.positions && !reset.attention) return NO_DOCUMENTS;
  const batch = starts.length / seqLength;
  return {
    positions: reset.positions ? g.input(documentPositions(starts, seqLength), [batch, seqLength], 'documents.positions') : null,
    starts: reset.attention ? g.input(starts, [starts.length], 'documents.starts') : null,
  };
}
