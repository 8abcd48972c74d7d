/** Random text from pieces that trip BPE pre-tokenizers: whitespace runs, contractions, numbers, accents, CJK, emoji with modifiers and joiners, the end-of-text marker. */
export const TRICKY_PIECES = [
  ' ',
  '  ',
  '\n',
  '\t',
  "'s",
  "'ll",
  "n't",
  'a',
  'Z',
  '9',
  '42',
  '3.14',
  'whale',
  'Ahab',
  'the',
  ' the',
  'é',
  '日',
  '日本',
  '😀',
  '👍🏽',
  '\u200d',
  '—',
  '.',
  '"',
  '\\',
  '<|endoftext|>',
];

/** `pieces` pieces drawn with `random`, joined. */
export function trickyText(random: () => number, pieces: number): string {
  return Array.from({ length: pieces }, () => TRICKY_PIECES[Math.floor(random() * TRICKY_PIECES.length)]!).join('');
}
