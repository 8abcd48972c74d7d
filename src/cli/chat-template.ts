/**
 * A model's chat template (Jinja, as Hugging Face's tokenizers carry it), for `webtron serve`'s
 * /chat/completions: rendered by @huggingface/jinja, the implementation Hugging Face's own
 * JavaScript libraries use, with the messages, `add_generation_prompt` and the tokenizer's
 * `bos_token` and `eos_token`, as `apply_chat_template` renders it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import type { TokenizerState } from '../data/tokenizer.js';
import { FlagError } from './flags.js';

export interface ChatTemplate {
  /** Where the template came from. */
  source: string;
  render(variables: Record<string, unknown>): string;
  /** The special tokens a template reads, as text. */
  tokens: { bos_token: string; eos_token: string };
}

/** A special token of tokenizer_config.json: a string, or an object with its `content`. */
function tokenText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  return '';
}

/**
 * The chat template: `file` (--chat-template), else `folder`'s chat_template.jinja (where newer
 * transformers save it), else the tokenizer_config.json's `chat_template` (a string, or a list of
 * named templates: the one named "default"); null where there is none.
 */
export function chatTemplateOf(
  state: TokenizerState,
  options: { file?: string | undefined; folder?: string | undefined },
): ChatTemplate | null {
  const config = state.type === 'HuggingFaceTokenizer' ? (state.config ?? {}) : {};
  let source: string;
  let text: string;
  if (options.file !== undefined) {
    source = options.file;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (error) {
      throw new FlagError(
        `--chat-template: cannot read ${options.file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
    }
  } else if (options.folder !== undefined && existsSync(join(options.folder, 'chat_template.jinja'))) {
    source = join(options.folder, 'chat_template.jinja');
    text = readFileSync(source, 'utf8');
  } else {
    const named = config.chat_template;
    const found = Array.isArray(named)
      ? (named.find((t) => (t as { name?: unknown }).name === 'default') as { template?: unknown } | undefined)?.template
      : named;
    if (typeof found !== 'string') return null;
    source = "the tokenizer's tokenizer_config.json";
    text = found;
  }
  let template: Template;
  try {
    template = new Template(text);
  } catch (error) {
    throw new FlagError(`${source}: not a chat template Jinja can read: ${(error as Error).message}; give one with --chat-template FILE`);
  }
  return {
    source,
    render: (variables) => template.render(variables),
    tokens: { bos_token: tokenText(config.bos_token), eos_token: tokenText(config.eos_token) },
  };
}
