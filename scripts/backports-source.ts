/**
 * The apt source for Debian backports, taken from the machine's own Debian source: the same mirror
 * (a machine behind its own mirror or proxy has no route to any other) and the same signed-by key.
 * `node dist/scripts/backports-source.js CODENAME` writes it (scripts/setup.sh calls it as root)
 * and says what it added; the parsing is pure and tested (test/setup/backports-source.test.ts).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../src/files.js';

export interface SourceFile {
  path: string;
  text: string;
}

export interface BackportsSource {
  /** Where to write it. */
  path: string;
  text: string;
  /** The mirror it uses and the file it was taken from. */
  uri: string;
  from: string;
}

/** deb822 stanzas (`*.sources`): fields by name, continuation lines joined with newlines. */
function stanzas(text: string): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  let current = new Map<string, string>();
  let last = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line.startsWith('#')) continue;
    if (line.trim() === '') {
      if (current.size > 0) out.push(current);
      current = new Map();
      continue;
    }
    if (/^[ \t]/.test(line) && last) {
      current.set(last, `${current.get(last)}\n${line}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    last = line.slice(0, colon).trim().toLowerCase();
    current.set(last, line.slice(colon + 1).trim());
  }
  if (current.size > 0) out.push(current);
  return out;
}

const words = (v: string | undefined) => (v ?? '').split(/\s+/).filter(Boolean);

/**
 * The backports source for `codename` from the machine's sources (deb822 `.sources` files first,
 * then one-line `.list` files), in the same format; null when no enabled `deb` source of
 * `codename` with component main exists.
 */
export function backportsSource(files: SourceFile[], codename: string, dir = '/etc/apt/sources.list.d'): BackportsSource | null {
  for (const f of files.filter((x) => x.path.endsWith('.sources'))) {
    for (const s of stanzas(f.text)) {
      if (/^(no|false)$/i.test(s.get('enabled') ?? 'yes')) continue;
      if (
        !words(s.get('types')).includes('deb') ||
        !words(s.get('suites')).includes(codename) ||
        !words(s.get('components')).includes('main')
      )
        continue;
      const uri = words(s.get('uris'))[0];
      if (!uri) continue;
      const signedBy = s.get('signed-by');
      const lines = [
        'Types: deb',
        `URIs: ${uri}`,
        `Suites: ${codename}-backports`,
        'Components: main',
        ...(signedBy ? [`Signed-By: ${signedBy}`] : []),
      ];
      return { path: join(dir, `webtron-${codename}-backports.sources`), text: `${lines.join('\n')}\n`, uri, from: f.path };
    }
  }
  for (const f of files.filter((x) => x.path.endsWith('.list'))) {
    for (const raw of f.text.split('\n')) {
      const line = raw.replace(/#.*/, '').trim();
      const m = /^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line);
      if (!m || m[3] !== codename || !words(m[4]).includes('main')) continue;
      const options = m[1] ? `${m[1].trim()} ` : '';
      return {
        path: join(dir, `webtron-${codename}-backports.list`),
        text: `deb ${options}${m[2]} ${codename}-backports main\n`,
        uri: m[2]!,
        from: f.path,
      };
    }
  }
  return null;
}

/** Whether some source already names `codename`-backports. */
export function hasBackports(files: SourceFile[], codename: string): boolean {
  return files.some((f) => f.text.split('\n').some((l) => !l.trim().startsWith('#') && l.includes(`${codename}-backports`)));
}

/** The machine's apt source files (sources.list and sources.list.d/*.list, *.sources). */
export function readSources(root = '/'): SourceFile[] {
  const etc = join(root, 'etc/apt');
  const files: SourceFile[] = [];
  const add = (path: string) => {
    try {
      files.push({ path, text: readFileSync(path, 'utf8') });
    } catch {
      // absent: nothing to read
    }
  };
  add(join(etc, 'sources.list'));
  let names: string[] = [];
  try {
    names = readdirSync(join(etc, 'sources.list.d')).sort();
  } catch {
    // no sources.list.d
  }
  for (const name of names) if (name.endsWith('.list') || name.endsWith('.sources')) add(join(etc, 'sources.list.d', name));
  return files;
}

function main(): number {
  const codename = process.argv[2];
  if (!codename) {
    process.stderr.write('usage: backports-source.js CODENAME\n');
    return 2;
  }
  // WEBTRON_APT_ROOT: another root to read and write (tests).
  const root = process.env.WEBTRON_APT_ROOT || '/';
  const files = readSources(root);
  if (hasBackports(files, codename)) {
    process.stderr.write(`webtron setup: ${codename}-backports is already an apt source\n`);
    return 0;
  }
  const source = backportsSource(files, codename, join(root, 'etc/apt/sources.list.d'));
  if (!source) {
    process.stderr.write(
      `webtron setup: no enabled Debian ${codename} source with component main in /etc/apt; add ${codename}-backports for your mirror yourself, then rerun\n`,
    );
    return 1;
  }
  writeFileAtomic(source.path, source.text);
  process.stderr.write(`webtron setup: added ${source.path} (${codename}-backports from ${source.uri}, the mirror of ${source.from})\n`);
  return 0;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/.*\//, ''))) process.exit(main());
