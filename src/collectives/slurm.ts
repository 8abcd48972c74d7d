/**
 * Slurm's side of the environment contract, pure but for reading the token file: its hostlist
 * syntax (`node[01-04,07]`, `rack[1-2]-gpu[1,3]`, `a,b[1-2]`) expanded in Slurm's order, the master
 * address and port a job's tasks agree on without being told (the first host of
 * SLURM_JOB_NODELIST; 15000 + the last four digits of SLURM_JOB_ID, as PyTorch Lightning picks), and
 * the job token every task derives from a file only the job's user can read.
 */
import { createHmac } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CollectiveError } from './errors.js';

/** Split at commas outside brackets. */
function topLevel(list: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (c === '[') depth += 1;
    else if (c === ']') depth -= 1;
    if (depth < 0 || depth > 1) throw new CollectiveError(`hostlist '${list}': unbalanced or nested brackets`);
    if (c === ',' && depth === 0) {
      out.push(list.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) throw new CollectiveError(`hostlist '${list}': a bracket is not closed`);
  out.push(list.slice(start));
  return out.filter((s) => s !== '');
}

/** The values of one bracket's ranges: `01-04,07` → 01 02 03 04 07, zero padding kept. */
function rangeValues(spec: string, list: string): string[] {
  return spec.split(',').flatMap((part) => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new CollectiveError(`hostlist '${list}': '${part}' is not a number or a range like 01-04`);
    const [lo, hi] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (hi < lo) throw new CollectiveError(`hostlist '${list}': range ${part} runs backwards`);
    if (hi - lo > 100_000) throw new CollectiveError(`hostlist '${list}': range ${part} names more than 100,000 hosts`);
    const width = m[1]!.length;
    return Array.from({ length: hi - lo + 1 }, (_, k) => String(lo + k).padStart(width, '0'));
  });
}

/** Every host a Slurm hostlist names, in Slurm's order (`scontrol show hostnames`). */
export function expandHostlist(list: string): string[] {
  return topLevel(list.trim()).flatMap((item) => {
    // Cartesian product over the item's bracket groups, leftmost slowest.
    let names = [''];
    for (const [, text, spec] of item.matchAll(/([^[]*)(?:\[([^\]]*)\])?/g)) {
      if (text === '' && spec === undefined) continue;
      const values = spec === undefined ? [''] : rangeValues(spec, list);
      names = names.flatMap((n) => values.map((v) => `${n}${text}${v}`));
    }
    return names;
  });
}

/** The master address and port of a Slurm job's tasks: the first host of its node list, and a port from its job id. */
export function slurmMaster(env: NodeJS.ProcessEnv): { addr: string; port: number } | null {
  const nodes = env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST;
  if (!nodes) return null;
  const first = expandHostlist(nodes)[0];
  if (!first) throw new CollectiveError(`SLURM_JOB_NODELIST='${nodes}' names no host`);
  const id = env.SLURM_JOB_ID ?? env.SLURM_JOBID;
  const port = id && /^\d+$/.test(id) ? 15000 + (Number(id.slice(-4)) % 10000) : 29500;
  return { addr: first, port };
}

/**
 * WEBTRON_JOB_TOKEN, else, inside a Slurm job, HMAC-SHA256 of the job id under the secret in
 * WEBTRON_JOB_TOKEN_FILE (default ~/.webtron/job-token): every task of the job derives the same
 * token, no one without the file can, and it is never printed. The file must be readable by its
 * owner only.
 */
export function jobToken(env: NodeJS.ProcessEnv): string | undefined {
  if (env.WEBTRON_JOB_TOKEN) return env.WEBTRON_JOB_TOKEN;
  const id = env.SLURM_JOB_ID ?? env.SLURM_JOBID;
  if (!id) return undefined;
  const path = env.WEBTRON_JOB_TOKEN_FILE || join(env.HOME || homedir(), '.webtron', 'job-token');
  let mode: number;
  let secret: Buffer;
  try {
    mode = statSync(path).mode;
    secret = readFileSync(path);
  } catch (error) {
    if (!env.WEBTRON_JOB_TOKEN_FILE && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CollectiveError(
      `WEBTRON_JOB_TOKEN_FILE: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; create it with \`umask 077; openssl rand -hex 32 > ${path}\``,
    );
  }
  if ((mode & 0o077) !== 0)
    throw new CollectiveError(
      `WEBTRON_JOB_TOKEN_FILE: ${path} is readable by others (mode ${(mode & 0o777).toString(8)}); \`chmod 600 ${path}\``,
    );
  if (secret.toString('utf8').trim().length < 16)
    throw new CollectiveError(`WEBTRON_JOB_TOKEN_FILE: ${path} holds fewer than 16 characters; put a long random secret in it`);
  return createHmac('sha256', secret.toString('utf8').trim()).update(`webtron job ${id}`).digest('hex');
}
