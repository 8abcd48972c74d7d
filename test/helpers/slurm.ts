/**
 * A one-host Slurm for the tests, from Debian's slurm-wlm and munge: a slurm.conf with this host as
 * the only node and one partition, munged on a socket of its own, slurmctld and slurmd in the
 * foreground as this process's children, all in a temporary folder with ports of their own, so the
 * machine's own configuration is never touched. `stop()` ends the daemons it started, by pid. Root
 * only; the packages are installed with apt when missing.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './job.js';
import { aptInstall, has } from './apt.js';

/** Why a Slurm cannot be started here (after trying to install it), or null when it can. */
export function slurmUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root, so no Slurm daemons can be started';
  if (!has('slurmctld') || !has('munged')) return aptInstall(['slurm-wlm', 'munge']);
  return null;
}

export class OneHostSlurm {
  readonly dir: string;
  /** The environment srun, sbatch and the other clients need (SLURM_CONF). */
  readonly env: NodeJS.ProcessEnv;
  private readonly daemons: ChildProcess[] = [];

  private constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'webtron-slurm-'));
    this.env = { ...process.env, SLURM_CONF: join(this.dir, 'slurm.conf') };
  }

  static async start(): Promise<OneHostSlurm> {
    const s = new OneHostSlurm();
    try {
      await s.boot();
    } catch (error) {
      await s.stop();
      throw error;
    }
    return s;
  }

  private async boot(): Promise<void> {
    const d = this.dir;
    for (const sub of ['state', 'spool']) mkdirSync(join(d, sub));
    writeFileSync(join(d, 'munge.key'), randomBytes(128));
    chmodSync(join(d, 'munge.key'), 0o600);
    const node = execFileSync('slurmd', ['-C'], { encoding: 'utf8' }).split('\n')[0]!;
    const [ctldPort, dPort] = [await freePort(), await freePort()];
    writeFileSync(
      join(d, 'slurm.conf'),
      [
        'ClusterName=webtron',
        `SlurmctldHost=${hostname()}`,
        'SlurmUser=root',
        'AuthType=auth/munge',
        // cred_expire is also how long a requeued job waits before it may start again (default 120 s).
        `AuthInfo=socket=${d}/munge.socket,cred_expire=10`,
        'CredType=cred/munge',
        `SlurmctldPort=${ctldPort}`,
        `SlurmdPort=${dPort}`,
        `StateSaveLocation=${d}/state`,
        `SlurmdSpoolDir=${d}/spool`,
        `SlurmctldPidFile=${d}/slurmctld.pid`,
        `SlurmdPidFile=${d}/slurmd.pid`,
        `SlurmctldLogFile=${d}/slurmctld.log`,
        `SlurmdLogFile=${d}/slurmd.log`,
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        // The main scheduling loop every 2 s, not 60: a requeued job starts once its wait is over, not a minute later.
        'SchedulerParameters=sched_interval=2',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_Core',
        'MpiDefault=none',
        'ReturnToService=2',
        'SwitchType=switch/none',
        'JobAcctGatherType=jobacct_gather/none',
        `${node} State=UNKNOWN`,
        'PartitionName=webtron Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
        '',
      ].join('\n'),
    );
    const daemon = (command: string, args: string[]) => {
      const child = spawn(command, args, { env: this.env, stdio: ['ignore', 'ignore', 'pipe'] });
      this.daemons.push(child);
    };
    daemon('munged', [
      '-F',
      '--force',
      `--socket=${d}/munge.socket`,
      `--key-file=${d}/munge.key`,
      `--pid-file=${d}/munged.pid`,
      `--log-file=${d}/munged.log`,
      `--seed-file=${d}/munge.seed`,
    ]);
    await this.until('munged', () => spawnSync('munge', ['-n', `--socket=${d}/munge.socket`]).status === 0);
    daemon('slurmctld', ['-D', '-i']);
    daemon('slurmd', ['-D']);
    await this.until(
      'the node to be idle',
      () => spawnSync('sinfo', ['-h', '-o', '%T'], { env: this.env, encoding: 'utf8' }).stdout.trim() === 'idle',
    );
  }

  private async until(what: string, ok: () => boolean, ms = 30_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!ok()) {
      const dead = this.daemons.find((c) => c.exitCode !== null);
      if (dead) throw new Error(`${dead.spawnfile} exited with code ${dead.exitCode} while waiting for ${what}; see ${this.dir}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; see the logs in ${this.dir}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Cancel what still runs, end the daemons (SIGTERM, then SIGKILL), remove the folder. */
  async stop(): Promise<void> {
    spawnSync('scancel', ['--full', '--partition', 'webtron'], { env: this.env, stdio: 'ignore' });
    for (const c of this.daemons.reverse()) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const gone = new Promise<void>((resolve) => c.once('exit', () => resolve()));
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
