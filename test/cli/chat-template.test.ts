/** Where `webtron serve` finds a chat template, and the special tokens it renders with. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chatTemplateOf } from '../../src/cli/chat-template.js';
import { FlagError } from '../../src/cli/flags.js';
import type { TokenizerState } from '../../src/data/tokenizer.js';

const dir = mkdtempSync(join(tmpdir(), 'webtron-chat-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const TURNS =
  '{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}';
const messages = [
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello' },
];

describe('chatTemplateOf', () => {
  it("reads tokenizer_config.json's template (the default of a list) with its special tokens; a folder's chat_template.jinja and --chat-template come first", () => {
    const state: TokenizerState = {
      type: 'HuggingFaceTokenizer',
      tokenizer: {},
      config: {
        bos_token: { content: '<s>', lstrip: false },
        eos_token: '</s>',
        chat_template: [
          { name: 'tool_use', template: 'tools' },
          { name: 'default', template: TURNS },
        ],
      },
    };
    const fromConfig = chatTemplateOf(state, {})!;
    expect(fromConfig.tokens).toEqual({ bos_token: '<s>', eos_token: '</s>' });
    expect(fromConfig.render({ messages, add_generation_prompt: true, ...fromConfig.tokens })).toBe(
      '<s><|user|>Hi</s><|assistant|>Hello</s><|assistant|>',
    );
    expect(fromConfig.render({ messages, add_generation_prompt: false, ...fromConfig.tokens })).toBe(
      '<s><|user|>Hi</s><|assistant|>Hello</s>',
    );
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ messages[0].content }} from the folder');
    expect(chatTemplateOf(state, { folder: dir })!.render({ messages })).toBe('Hi from the folder');
    writeFileSync(join(dir, 'mine.jinja'), '{{ messages | length }} messages');
    expect(chatTemplateOf(state, { file: join(dir, 'mine.jinja'), folder: dir })!.render({ messages })).toBe('2 messages');
    expect(chatTemplateOf({ type: 'CharTokenizer', chars: ['a'] }, {})).toBeNull();
    expect(chatTemplateOf({ ...state, config: {} }, {})).toBeNull();
    writeFileSync(join(dir, 'broken.jinja'), '{% if %}');
    expect(() => chatTemplateOf(state, { file: join(dir, 'broken.jinja') })).toThrow(FlagError);
  });
});
