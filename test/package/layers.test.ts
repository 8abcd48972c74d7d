/**
 * The source tree's shape: the lower layers never import the trainer or the command line, and no
 * function of the trainer grows past 120 lines (each concern has its named place, Megatron's way).
 * Read from the source with TypeScript's own parser.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const LOWER = ['checkpoint', 'collectives', 'data', 'ddp', 'gpu', 'memory', 'nn', 'onnx', 'optimizer', 'plot'];
const MAX_LINES = 120;

function sources(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

function parse(path: string): ts.SourceFile {
  return ts.createSourceFile(path, readFileSync(join(root, path), 'utf8'), ts.ScriptTarget.Latest, true);
}

/** The modules a source file imports or re-exports from. */
function importsOf(path: string): string[] {
  return parse(path).statements.flatMap((statement) =>
    (ts.isImportDeclaration(statement) || ts.isExportDeclaration(statement)) &&
    statement.moduleSpecifier &&
    ts.isStringLiteral(statement.moduleSpecifier)
      ? [statement.moduleSpecifier.text]
      : [],
  );
}

describe('layers', () => {
  it('no module under the lower layers imports from src/train or src/cli', () => {
    const offending: string[] = [];
    for (const layer of LOWER)
      for (const path of sources(join('src', layer))) {
        for (const from of importsOf(path)) if (/(^|\/)(train|cli)\//.test(from)) offending.push(`${path} imports ${from}`);
      }
    // The check itself: a file of the trainer does import from its own layer.
    expect(importsOf('src/train/trainer.ts').length).toBeGreaterThan(5);
    expect(offending).toEqual([]);
  });

  it('nothing under src imports src/cli but src/cli itself (bin/webtron.js runs it)', () => {
    const offending: string[] = [];
    for (const path of sources('src').filter((p) => !p.startsWith(join('src', 'cli')))) {
      for (const from of importsOf(path)) if (/(^|\/)cli\//.test(from)) offending.push(`${path} imports ${from}`);
    }
    expect(offending).toEqual([]);
  });

  it("nothing under src imports src/browser but src/browser itself (it is the browser worker's entry, bundled on its own)", () => {
    const offending: string[] = [];
    for (const path of sources('src').filter((p) => !p.startsWith(join('src', 'browser')))) {
      for (const from of importsOf(path)) if (/(^|\/)browser\//.test(from)) offending.push(`${path} imports ${from}`);
    }
    // The check itself: the worker does import the trainer.
    expect(importsOf('src/browser/worker.ts')).toContain('../train/trainer.js');
    expect(offending).toEqual([]);
  });

  it(`no function in src/train is longer than ${MAX_LINES} lines`, () => {
    const long: string[] = [];
    let functions = 0;
    for (const path of sources('src/train')) {
      const file = parse(path);
      const visit = (node: ts.Node): void => {
        if (ts.isFunctionLike(node) && 'body' in node && node.body) {
          functions += 1;
          const first = file.getLineAndCharacterOfPosition(node.getStart(file)).line;
          const last = file.getLineAndCharacterOfPosition(node.getEnd()).line;
          const name = (node as ts.FunctionDeclaration).name?.getText(file) ?? '(anonymous)';
          if (last - first + 1 > MAX_LINES)
            long.push(`${relative(root, join(root, path))}:${first + 1} ${name}: ${last - first + 1} lines`);
        }
        ts.forEachChild(node, visit);
      };
      visit(file);
    }
    expect(functions).toBeGreaterThan(20);
    expect(long).toEqual([]);
  });
});
