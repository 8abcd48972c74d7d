import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { backportsSource, hasBackports } from '../../scripts/backports-source.js';

const SCRIPT = fileURLToPath(new URL('../../dist/scripts/backports-source.js', import.meta.url));

const deb822 = `Types: deb
# a comment inside the stanza
URIs: http://mirror.internal.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.internal.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

describe("the backports source follows the machine's own Debian source", () => {
  it('deb822: same mirror and key, in the same format', () => {
    expect(backportsSource([{ path: '/etc/apt/sources.list.d/debian.sources', text: deb822 }], 'bookworm')).toEqual({
      path: '/etc/apt/sources.list.d/webtron-bookworm-backports.sources',
      text: 'Types: deb\nURIs: http://mirror.internal.example/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n',
      uri: 'http://mirror.internal.example/debian',
      from: '/etc/apt/sources.list.d/debian.sources',
    });
  });

  it('one-line sources: options (signed-by) kept; comments, deb-src and other suites skipped', () => {
    const list =
      '# deb http://old.example/debian bookworm main\ndeb-src http://src.example/debian bookworm main\ndeb http://x.example/debian bullseye main\ndeb [arch=amd64 signed-by=/etc/apt/keyrings/k.gpg] https://proxy.example:3142/debian bookworm main non-free\n';
    expect(backportsSource([{ path: '/etc/apt/sources.list', text: list }], 'bookworm')).toEqual({
      path: '/etc/apt/sources.list.d/webtron-bookworm-backports.list',
      text: 'deb [arch=amd64 signed-by=/etc/apt/keyrings/k.gpg] https://proxy.example:3142/debian bookworm-backports main\n',
      uri: 'https://proxy.example:3142/debian',
      from: '/etc/apt/sources.list',
    });
  });

  it('a disabled stanza, another codename or no main component gives nothing to copy', () => {
    expect(
      backportsSource([{ path: 'a.sources', text: deb822.replace('Types: deb\n#', 'Enabled: no\nTypes: deb\n#') }], 'bookworm'),
    ).toBeNull();
    expect(backportsSource([{ path: 'a.sources', text: deb822 }], 'trixie')).toBeNull();
    expect(backportsSource([{ path: 'a.list', text: 'deb http://m.example/debian bookworm contrib\n' }], 'bookworm')).toBeNull();
    expect(hasBackports([{ path: 'a.list', text: '# deb http://m/debian bookworm-backports main\n' }], 'bookworm')).toBe(false);
    expect(hasBackports([{ path: 'a.sources', text: 'Suites: bookworm-backports\n' }], 'bookworm')).toBe(true);
  });

  it('the set-up step writes it under the apt root and says what it added', () => {
    const root = mkdtempSync(join(tmpdir(), 'webtron-apt-'));
    mkdirSync(join(root, 'etc/apt/sources.list.d'), { recursive: true });
    writeFileSync(join(root, 'etc/apt/sources.list.d/debian.sources'), deb822);
    const run = spawnSync('node', [SCRIPT, 'bookworm'], { encoding: 'utf8', env: { ...process.env, WEBTRON_APT_ROOT: root } });
    expect(run.status, run.stderr).toBe(0);
    const written = join(root, 'etc/apt/sources.list.d/webtron-bookworm-backports.sources');
    expect(readFileSync(written, 'utf8')).toContain('URIs: http://mirror.internal.example/debian\nSuites: bookworm-backports');
    expect(run.stderr).toBe(
      `webtron setup: added ${written} (bookworm-backports from http://mirror.internal.example/debian, the mirror of ${join(root, 'etc/apt/sources.list.d/debian.sources')})\n`,
    );
    const again = spawnSync('node', [SCRIPT, 'bookworm'], { encoding: 'utf8', env: { ...process.env, WEBTRON_APT_ROOT: root } });
    expect(again.stderr).toMatch(/bookworm-backports is already an apt source/);
    const empty = mkdtempSync(join(tmpdir(), 'webtron-apt-'));
    const none = spawnSync('node', [SCRIPT, 'bookworm'], { encoding: 'utf8', env: { ...process.env, WEBTRON_APT_ROOT: empty } });
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(
      /no enabled Debian bookworm source with component main in \/etc\/apt; add bookworm-backports for your mirror yourself/,
    );
  });
});
