/**
 * What the browser workers' page serves (src/train/browser-host.ts), over HTTP as a tab or a
 * stranger would ask: a join token works once, a request without the session is refused, and a
 * tab's file calls reach the job's data, checkpoints and webtron's shaders and nothing else.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFlags } from '../../src/cli/flags.js';
import { resolveTrainConfig, TRAIN_FLAGS } from '../../src/cli/train-flags.js';
import { BrowserHost } from '../../src/train/browser-host.js';

describe("the browser workers' page", () => {
  const base = mkdtempSync(join(tmpdir(), 'webtron-browser-host-'));
  const data = join(base, 'corpus.txt');
  const save = join(base, 'checkpoints');
  const logged: string[] = [];
  let host: BrowserHost;
  let url: string;

  beforeAll(async () => {
    writeFileSync(data, 'Call me Ishmael.\n\nSome years ago.\n');
    writeFileSync(join(base, 'secret.txt'), 'not for tabs');
    mkdirSync(save);
    const model = [
      '--num-layers',
      '1',
      '--hidden-size',
      '8',
      '--num-attention-heads',
      '1',
      '--seq-length',
      '4',
      '--micro-batch-size',
      '1',
      '--lr',
      '1e-3',
    ];
    const flags = [...model, '--train-iters', '1', '--data-path', data, '--save', save, '--run-dir', join(base, 'run')];
    const { values } = parseFlags(flags, TRAIN_FLAGS, {});
    host = await BrowserHost.start({
      host: '127.0.0.1',
      port: 0,
      ranks: [1],
      worldSize: 2,
      config: resolveTrainConfig(values, 2),
      env: { WEBTRON_JOB_TOKEN: 'job-secret' },
      storeHost: '127.0.0.1',
      storePort: 1,
      peek: () => undefined,
      log: (line) => logged.push(line),
    });
    url = host.urls.get(1)!;
  });
  afterAll(() => host?.close());

  const origin = () => new URL(url).origin;
  const join1 = (token: string) => fetch(`${origin()}/webtron/join`, { method: 'POST', body: JSON.stringify({ join: token }) });
  const fs = (session: string, op: string, params: Record<string, string>, body?: Uint8Array) =>
    fetch(`${origin()}/webtron/fs?${new URLSearchParams({ op, ...params })}`, {
      method: 'POST',
      headers: { 'x-webtron-session': session },
      ...(body ? { body } : {}),
    });

  it('admits one tab per join token, and tells the job who was refused', async () => {
    const token = new URL(url).searchParams.get('join')!;
    expect((await join1('wrong')).status).toBe(403);
    const first = await join1(token);
    expect(first.status).toBe(200);
    const answer = (await first.json()) as { rank: number; worldSize: number; session: string; env: Record<string, string> };
    expect(answer).toMatchObject({ rank: 1, worldSize: 2 });
    expect(answer.env).toMatchObject({ RANK: '1', WORLD_SIZE: '2', WEBTRON_JOB_TOKEN: 'job-secret' });
    expect((await join1(token)).status).toBe(403);
    expect(
      logged.filter((l) => /refused a browser worker from 127\.0\.0\.1:\d+: its join token is wrong or already used/.test(l)),
    ).toHaveLength(2);

    const session = answer.session;
    // The data in HTTP range requests, the shaders, and the checkpoint folder: yes.
    const read = (path: string, range?: string) =>
      fetch(`${origin()}/webtron/file?${new URLSearchParams({ path })}`, {
        headers: { 'x-webtron-session': session, ...(range ? { range } : {}) },
      });
    const part = await read(data, 'bytes=5-6');
    expect([part.status, part.headers.get('content-range'), await part.text()]).toEqual([206, 'bytes 5-6/34', 'me']);
    const whole = await read(data);
    expect([whole.status, await whole.text()]).toEqual([200, readFileSync(data, 'utf8')]);
    expect((await read(data, 'bytes=34-')).status).toBe(416);
    expect((await fs(session, 'stat', { path: '/@webtron/shaders/matmul.wgsl' })).status).toBe(200);
    expect((await fs(session, 'create', { path: join(save, 'shard'), truncate: 'true' })).status).toBe(200);
    expect((await fs(session, 'write', { path: join(save, 'shard'), offset: '0' }, new Uint8Array([1, 2, 3]))).status).toBe(200);
    expect([...readFileSync(join(save, 'shard'))]).toEqual([1, 2, 3]);
    // Anything else: no, whatever the spelling.
    for (const path of [
      join(base, 'secret.txt'),
      `${save}/../secret.txt`,
      '/etc/passwd',
      '/@webtron/package-lock.json',
      '/@webtron/shaders/../src',
    ]) {
      const r = await read(path);
      expect([403, 404], path).toContain(r.status);
      expect(await r.text(), path).not.toMatch(/not for tabs|root:/);
    }
    for (const [op, params] of [
      ['create', { path: join(base, 'planted'), truncate: 'true' }],
      ['write', { path: data, offset: '0' }],
      ['rename', { path: join(save, 'shard'), to: join(base, 'moved') }],
      ['rm', { path: data, recursive: 'false', force: 'true' }],
    ] as const) {
      expect((await fs(session, op, params, new Uint8Array([9]))).status, `${op} ${JSON.stringify(params)}`).toBe(403);
    }
    expect(readFileSync(data, 'utf8')).toMatch(/^Call me Ishmael/);
    // Without the session: no.
    expect((await fetch(`${origin()}/webtron/file?${new URLSearchParams({ path: data })}`)).status).toBe(403);
    expect((await fs('guess', 'stat', { path: data })).status).toBe(403);
  });
});
