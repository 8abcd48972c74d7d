/**
 * The package as people install it: `npm pack` from a copy of the source without dist/ (prepack
 * builds it), the tarball installed into an empty project, its entry points imported there and
 * checked against docs/api/ both ways, its types resolved by tsc, and `npx webtron info` run.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'webtron-pack-'));
const app = join(work, 'app');
let tarball: string;
let files: string[];

const ENTRY_POINTS = ['webtron', 'webtron/gpu', 'webtron/collectives', 'webtron/checkpoint', 'webtron/data'];

/** docs/api/ (TypeDoc's pages, `npm run docs`): each entry point's page, its first heading, and the names under it. */
function documented(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const dir = join(root, 'docs/api/webtron');
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.md'))) {
    const lines = readFileSync(join(dir, file), 'utf8').split('\n');
    // `### Name`, `### Name()`, with TypeDoc's escaped underscores; namespaces are listed as links.
    const names = lines
      .map((line) => /^### ([\w\\]+)(\(\))?$/.exec(line)?.[1] ?? /^- \[(\w+)\]\(namespaces\//.exec(line)?.[1])
      .filter((n): n is string => n !== undefined)
      .map((n) => n.replaceAll('\\_', '_'));
    out.set(/^# (\S+)/.exec(lines[0]!)![1]!, names);
  }
  return new Map(ENTRY_POINTS.filter((e) => out.has(e)).map((e) => [e, out.get(e)!]));
}

beforeAll(() => {
  // The tracked and untracked-but-not-ignored files: what a clean clone has, without dist/.
  const source = join(work, 'source');
  const listed = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' });
  for (const f of listed.split('\0').filter((f) => f !== '')) {
    mkdirSync(dirname(join(source, f)), { recursive: true });
    try {
      cpSync(join(root, f), join(source, f));
    } catch {
      // deleted in the working tree but not yet in git
    }
  }
  symlinkSync(join(root, 'node_modules'), join(source, 'node_modules'));
  const packed = JSON.parse(
    execFileSync('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: source,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  ) as { filename: string; files: { path: string }[] }[];
  tarball = join(work, packed[0]!.filename);
  files = packed[0]!.files.map((f) => f.path);
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel', 'error', tarball], {
    cwd: app,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' },
  });
}, 600_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the npm package', () => {
  it('holds the built library, its types, the CLI, the shaders and the API document; no tests, benchmarks or maps', () => {
    for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'bin/webtron.js', 'package.json']) {
      expect(files).toContain(f);
    }
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      exports: Record<string, string | Record<string, string>>;
    };
    for (const target of Object.values(pkg.exports).flatMap((t) => (typeof t === 'string' ? [t] : Object.values(t)))) {
      expect(files).toContain(target.replace(/^\.\//, ''));
    }
    const shaders = execFileSync('git', ['ls-files', 'shaders'], { cwd: root, encoding: 'utf8' }).trim().split('\n');
    for (const s of shaders) expect(files).toContain(s);
    expect(files.filter((f) => /^(test|bench|scripts|dist\/test|dist\/bench|dist\/scripts)\//.test(f) || f.endsWith('.map'))).toEqual([]);
  });

  it('docs/api/ is what TypeDoc makes of the source now (npm run docs rewrites it)', () => {
    const out = join(work, 'api');
    execFileSync(join(root, 'node_modules/.bin/typedoc'), ['--out', out], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const tree = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true, recursive: true })
        .filter((e) => e.isFile())
        .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
        .sort();
    const made = tree(out);
    expect(tree(join(root, 'docs/api'))).toEqual(made);
    for (const f of made) expect(readFileSync(join(root, 'docs/api', f), 'utf8'), `docs/api/${f}`).toBe(readFileSync(join(out, f), 'utf8'));
  });

  it('every entry point exports exactly what docs/api/ lists', () => {
    const docs = documented();
    expect([...docs.keys()]).toEqual(ENTRY_POINTS);
    const script = `const out = {}; for (const e of ${JSON.stringify(ENTRY_POINTS)}) out[e] = Object.keys(await import(e)); console.log(JSON.stringify(out));`;
    const runtime = JSON.parse(
      execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: app, encoding: 'utf8' }),
    ) as Record<string, string[]>;
    for (const entry of ENTRY_POINTS) {
      const listed = docs.get(entry)!;
      // Every value exported is documented; every documented name is a value or a type of that entry point.
      expect(
        runtime[entry]!.filter((n) => !listed.includes(n)),
        `${entry}: exported but not in docs/api/`,
      ).toEqual([]);
      const dts = readFileSync(join(app, 'node_modules/webtron', entryDts(entry)), 'utf8');
      const missing = listed.filter(
        (n) => !runtime[entry]!.includes(n) && !new RegExp(`\\btype ${n}\\b|\\b${n}\\b[^;]*\\} from`).test(dts),
      );
      expect(missing, `${entry}: in docs/api/ but not exported`).toEqual([]);
    }
  });

  it('the types resolve for a TypeScript program that imports it (and a wrong use is a type error)', () => {
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          target: 'ES2022',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: [],
        },
      }),
    );
    const good = `import { computeLayout, gptParamCount, type ParamSpec, type Optimizer } from 'webtron';
import { Kernels } from 'webtron/gpu';
import { StoreServer } from 'webtron/collectives';
import { readCheckpointIndex } from 'webtron/checkpoint';
const spec: ParamSpec = { name: 'w', shape: [4, 4], dtype: 'float32', gradDtype: 'float32' };
const n: number = computeLayout([spec], { dataParallelSize: 2, distributedOptimizer: true }).paramCount;
const p: number = gptParamCount({ numLayers: 1, hiddenSize: 8, numAttentionHeads: 2, seqLength: 4, vocabSize: 16, tiedHead: true });
export const used = [n, p, Kernels, StoreServer, readCheckpointIndex] as const;
export type O = Optimizer;
`;
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    writeFileSync(join(app, 'main.ts'), good);
    const ok = spawnSync(process.execPath, [tsc, '-p', '.'], { cwd: app, encoding: 'utf8' });
    expect(ok.stdout + ok.stderr).toBe('');
    writeFileSync(join(app, 'main.ts'), `${good}const wrong: string = gptParamCount({ numLayers: 1 });\n`);
    const bad = spawnSync(process.execPath, [tsc, '-p', '.'], { cwd: app, encoding: 'utf8' });
    expect(bad.stdout).toMatch(/main\.ts.*error TS2(322|345|739|741)/);
  });

  it('npx webtron info runs from the installed package and prints only its own output', () => {
    const run = spawnSync('npx', ['--no-install', 'webtron', 'info'], { cwd: app, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^adapter +\S/m);
    expect(run.stdout).toMatch(/^maxStorageBufferBindingSize +\d+/m);
  });
});

/** The .d.ts an entry point resolves to, from the package's exports map. */
function entryDts(entry: string): string {
  const pkg = JSON.parse(readFileSync(join(app, 'node_modules/webtron/package.json'), 'utf8')) as {
    exports: Record<string, { types: string }>;
  };
  return pkg.exports[entry === 'webtron' ? '.' : `./${entry.slice('webtron/'.length)}`]!.types;
}
