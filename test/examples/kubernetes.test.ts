/**
 * examples/kubernetes/train.yaml against the environment contract webtron reads: every pod of the
 * Indexed Job, its env rendered as Kubernetes would (literal values, the completion index for the
 * fieldRef, the Secret's value for the secretKeyRef), resolves to its own rank of the right world
 * with pod 0's DNS name (hostname.subdomain through the headless Service) as the master, and the
 * container's arguments are flags `webtron train` accepts for that world.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { resolveInfo } from '../../src/collectives/init.js';
import { TRAIN_FLAGS, resolveTrainConfig } from '../../src/cli/train-flags.js';
import { parseFlags } from '../../src/cli/flags.js';

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } };
}

const manifest = readFileSync(fileURLToPath(new URL('../../examples/kubernetes/train.yaml', import.meta.url)), 'utf8');
// biome-ignore lint/suspicious/noExplicitAny: a manifest is untyped YAML
const docs = parseAllDocuments(manifest).map((d) => d.toJS() as any);

describe('examples/kubernetes/train.yaml', () => {
  it('every pod resolves to its own rank, the world of the Job, and pod 0 through the headless Service as master', () => {
    const service = docs.find((d) => d.kind === 'Service');
    const job = docs.find((d) => d.kind === 'Job');
    expect(service.spec.clusterIP).toBe('None');
    expect(job.spec.completionMode).toBe('Indexed');
    expect(job.spec.parallelism).toBe(job.spec.completions);
    const pod = job.spec.template;
    for (const [k, v] of Object.entries(service.spec.selector)) expect(pod.metadata.labels[k]).toBe(v);
    expect(pod.spec.subdomain).toBe(service.metadata.name);
    const container = pod.spec.containers[0];
    const world = job.spec.completions as number;
    const pod0 = `${job.metadata.name}-0.${pod.spec.subdomain}`; // Kubernetes' name for pod 0 of an Indexed Job with a subdomain
    const secret = 'the-value-of-the-secret';
    const vars = container.env as EnvVar[];
    expect(vars.find((v) => v.name === 'WEBTRON_JOB_TOKEN')!.value, 'the token is not written in the manifest').toBeUndefined();
    for (let index = 0; index < world; index++) {
      const env: NodeJS.ProcessEnv = {};
      for (const v of vars) {
        if (v.value !== undefined) env[v.name] = v.value;
        else if (v.valueFrom?.fieldRef?.fieldPath === "metadata.annotations['batch.kubernetes.io/job-completion-index']")
          env[v.name] = String(index);
        else if (v.valueFrom?.secretKeyRef) env[v.name] = secret;
        else throw new Error(`env ${v.name}: a source the test cannot render`);
      }
      expect(resolveInfo({}, env)).toEqual({
        rank: index,
        worldSize: world,
        localRank: 0,
        localWorldSize: 1,
        masterAddr: pod0,
        masterPort: 29500,
      });
      expect(env.WEBTRON_JOB_TOKEN).toBe(secret);
    }
    expect(service.spec.ports.map((p: { port: number }) => p.port)).toContain(29500);
    expect(container.ports.map((p: { containerPort: number }) => p.containerPort)).toContain(29500);
    // The arguments are flags webtron train accepts for this world; it runs as one worker (RANK and WORLD_SIZE set).
    expect(container.command.slice(-2)).toEqual(['webtron', 'train']);
    const { values, positional } = parseFlags(container.args, TRAIN_FLAGS, {});
    expect(positional).toEqual([]);
    const cfg = resolveTrainConfig(values, world);
    expect(cfg.useDistributedOptimizer).toBe(true);
    expect(cfg.save!.startsWith(container.volumeMounts[0].mountPath)).toBe(true);
    const claim = docs.find((d) => d.kind === 'PersistentVolumeClaim');
    expect(claim.spec.accessModes).toContain('ReadWriteMany');
    expect(pod.spec.volumes[0].persistentVolumeClaim.claimName).toBe(claim.metadata.name);
  });
});
