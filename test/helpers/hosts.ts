/**
 * Test hosts on one machine: network namespaces, each with its own loopback and one veth interface
 * plugged into a bridge in a switch namespace, addresses 192.0.2.1, .2, ... (TEST-NET-1, set aside
 * for documentation and tests). Processes started in a host are tracked by pid; `teardown()` kills
 * them (and anything else left in the namespaces) and deletes the namespaces, which removes the
 * interfaces. Root only: `hostsUnavailable()` says why not.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';

export interface TestHost {
  /** The namespace. */
  ns: string;
  /** Its interface to the switch. */
  ifname: string;
  address: string;
}

/** Why namespaces cannot be made here, or null when they can. */
export function hostsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root, so no network namespaces can be made';
  if (spawnSync('ip', ['-V']).status !== 0) return "iproute2's `ip` is not installed";
  return null;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

export class TestHosts {
  readonly hosts: TestHost[];
  private readonly switchNs: string;
  private readonly children: ChildProcess[] = [];

  private constructor(
    readonly tag: string,
    count: number,
  ) {
    this.switchNs = `${tag}sw`;
    this.hosts = Array.from({ length: count }, (_, i) => ({ ns: `${tag}h${i}`, ifname: `${tag}e${i}`, address: `192.0.2.${i + 1}` }));
  }

  /** `count` hosts on one switch; on any failure what was made is removed again. */
  static make(count = 2): TestHosts {
    const t = new TestHosts(`wt${process.pid % 100000}`, count);
    try {
      ip('netns', 'add', t.switchNs);
      ip('-n', t.switchNs, 'link', 'add', 'br0', 'type', 'bridge');
      ip('-n', t.switchNs, 'link', 'set', 'br0', 'up');
      t.hosts.forEach((h, i) => {
        const port = `${t.tag}s${i}`;
        ip('netns', 'add', h.ns);
        ip('-n', h.ns, 'link', 'set', 'lo', 'up');
        ip('link', 'add', h.ifname, 'netns', h.ns, 'type', 'veth', 'peer', 'name', port, 'netns', t.switchNs);
        ip('-n', t.switchNs, 'link', 'set', port, 'master', 'br0');
        ip('-n', t.switchNs, 'link', 'set', port, 'up');
        ip('-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', h.ifname);
        ip('-n', h.ns, 'link', 'set', h.ifname, 'up');
      });
    } catch (error) {
      t.teardown();
      throw error;
    }
    return t;
  }

  /** Start `command` in host `i` (`ip netns exec` execs it: the child's pid is the command's). */
  spawn(i: number, command: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.hosts[i]!.ns, command, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.children.push(child);
    return child;
  }

  /** Run `command` in host `i` and return its stdout. */
  run(i: number, command: string, args: string[]): string {
    return execFileSync('ip', ['netns', 'exec', this.hosts[i]!.ns, command, ...args], { encoding: 'utf8' });
  }

  /** Listening TCP sockets of host `i` (IPv4): "address:port". */
  listening(i: number): string[] {
    return this.run(i, 'cat', ['/proc/net/tcp'])
      .trim()
      .split('\n')
      .slice(1)
      .map((line) => line.trim().split(/\s+/))
      .filter((f) => f[3] === '0A')
      .map((f) => {
        const [hex, port] = f[1]!.split(':');
        const address = [3, 2, 1, 0].map((k) => Number.parseInt(hex!.slice(2 * k, 2 * k + 2), 16)).join('.');
        return `${address}:${Number.parseInt(port!, 16)}`;
      });
  }

  /** Pids of every process in host `i`'s namespace. */
  pids(i: number): number[] {
    return spawnSync('ip', ['netns', 'pids', this.hosts[i]!.ns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  }

  /** Send `signal` to every process in host `i`. */
  signalAll(i: number, signal: NodeJS.Signals): void {
    for (const pid of this.pids(i)) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
  }

  /** Kill what was started (and whatever else runs in the namespaces), then delete the namespaces. */
  teardown(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
    for (const ns of [...this.hosts.map((h) => h.ns), this.switchNs]) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      spawnSync('ip', ['netns', 'del', ns]);
    }
  }
}

/** Output and exit of a child, once it ends. */
export function finished(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}
