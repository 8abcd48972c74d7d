/**
 * Dawn instances and adapter choice. Dawn's node bindings take backend and adapter selection as
 * instance options, so each distinct option set gets one instance, kept alive for the life of the
 * process: if the object `create()` returns is garbage collected, Dawn hangs or crashes.
 */
import { create, globals } from 'webgpu';
import { NoAdapterError } from './errors.js';

Object.assign(globalThis, globals);

export interface AdapterOptions {
  /** Dawn backend: vulkan, metal, d3d12, d3d11, opengl, opengles, null. Default: `WEBTRON_BACKEND` or Dawn's choice. */
  backend?: string | undefined;
  /** Adapter name as Dawn reports it (e.g. "llvmpipe"). Default: `WEBTRON_ADAPTER` or the best adapter. */
  adapter?: string | undefined;
  /** Default 'high-performance', so a discrete GPU wins over an integrated one and a CPU renderer comes last. */
  powerPreference?: GPUPowerPreference | undefined;
  /** Extra Dawn instance flags, e.g. `enable-dawn-features=dump_shaders`. */
  dawnFlags?: string[] | undefined;
}

export interface FoundAdapter {
  adapter: GPUAdapter;
  info: GPUAdapterInfo;
  backend: string;
  /** One line for people: "llvmpipe (LLVM 19.1.7, 256 bits) — vulkan, cpu". */
  description: string;
  /** The Dawn toggles webtron enabled for this adapter (none on a software adapter). */
  toggles: string[];
}

// The one deliberate piece of module-level state: Dawn instances must outlive every use of them.
const dawnInstances = new Map<string, GPU>();

function dawn(flags: string[]): GPU {
  const key = flags.join('\n');
  let gpu = dawnInstances.get(key);
  if (!gpu) {
    gpu = create(flags);
    dawnInstances.set(key, gpu);
  }
  return gpu;
}

const KNOWN_BACKENDS = ['vulkan', 'metal', 'd3d12', 'd3d11', 'opengl', 'opengles', 'null'];

/** The backends worth trying on this platform, best first. */
export function platformBackends(): string[] {
  switch (process.platform) {
    case 'darwin':
      return ['metal'];
    case 'win32':
      return ['d3d12', 'vulkan', 'd3d11'];
    default:
      return ['vulkan', 'opengles', 'opengl'];
  }
}

function resolveOptions(options: AdapterOptions): Required<Omit<AdapterOptions, 'backend' | 'adapter'>> & {
  backend: string | undefined;
  adapter: string | undefined;
} {
  const backend = options.backend ?? (process.env.WEBTRON_BACKEND || undefined);
  if (backend !== undefined && !KNOWN_BACKENDS.includes(backend)) {
    throw new NoAdapterError(
      `${options.backend ? 'backend' : 'WEBTRON_BACKEND'} '${backend}' is not a backend Dawn knows; use one of ${KNOWN_BACKENDS.join(', ')}`,
      options.backend ? ['backend'] : [],
    );
  }
  return {
    backend,
    adapter: options.adapter ?? (process.env.WEBTRON_ADAPTER || undefined),
    powerPreference: options.powerPreference ?? 'high-performance',
    dawnFlags: options.dawnFlags ?? [],
  };
}

function backendOf(info: GPUAdapterInfo, requested: string | undefined): string {
  // Dawn's adapter info carries no standard backend field; fall back to what was asked for, or the
  // platform's first backend (what Dawn itself prefers).
  const extra = info as unknown as { backendType?: string; backend?: string };
  return (extra.backendType ?? extra.backend ?? requested ?? platformBackends()[0] ?? 'unknown').toLowerCase();
}

/** A driver that runs shaders on the CPU (lavapipe, SwiftShader). */
export function isSoftwareAdapter(info: GPUAdapterInfo): boolean {
  return info.isFallbackAdapter || info.architecture === 'software';
}

/**
 * What names the adapter's model, for tables of known devices: its description and its device id
 * with dashes as spaces. On NVIDIA's Vulkan driver Dawn's description is the driver version alone
 * ('NVIDIA: 580.159.04 580.159.4.0') and the model is in the device id ('nvidia-h200').
 */
export function adapterModel(info: Pick<GPUAdapterInfo, 'description' | 'device' | 'vendor'>): string {
  return [info.description, info.device.replace(/-/g, ' '), info.vendor].filter(Boolean).join(' ');
}

export function describeAdapter(info: GPUAdapterInfo, backend: string): string {
  const name = info.description || info.device || info.vendor || 'unknown adapter';
  return `${name} — ${backend}${isSoftwareAdapter(info) ? ' (software)' : ''}`;
}

/**
 * Dawn toggles for hardware adapters, as onnxruntime's WebGPU provider sets them: experimental
 * features such as chromium-experimental-subgroup-matrix (tensor cores from WGSL) are offered only
 * with allow_unsafe_apis; Dawn keeps f16 off on NVIDIA's Vulkan driver without
 * vulkan_enable_f16_on_nvidia; subgroup matrices need the Vulkan memory model. Software adapters
 * run without them.
 */
const HARDWARE_TOGGLES = ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia', 'use_vulkan_memory_model'];

/**
 * `WEBTRON_DAWN_TOGGLES`: more Dawn toggles to enable on hardware adapters, comma-separated (for
 * measuring, e.g. `disable_robustness,disable_workgroup_init,skip_validation`).
 */
export function extraToggles(env: NodeJS.ProcessEnv = process.env): string[] {
  const text = env.WEBTRON_DAWN_TOGGLES?.trim();
  if (!text) return [];
  const names = text.split(',').map((t) => t.trim());
  const bad = names.find((t) => !/^[a-z0-9_]+$/.test(t));
  if (bad !== undefined)
    throw new NoAdapterError(
      `WEBTRON_DAWN_TOGGLES has '${bad}', not a Dawn toggle name; give names like disable_robustness, comma-separated`,
    );
  return names;
}

/**
 * Dawn rounds timestamp queries down to 16.384 µs unless `timestamp_quantization` is disabled: a
 * browser's guard against timing attacks, which in Node only blurs what webtron measures. On an
 * H200 it made the tuner's times whole multiples of that quantum (a 256³ product "took" 65.5 µs
 * whatever the tile), so its choices were ties. Joined to the caller's own disabled features.
 */
export function withPreciseTimestamps(flags: readonly string[]): string[] {
  const key = 'disable-dawn-features=';
  const i = flags.findIndex((f) => f.startsWith(key));
  if (i < 0) return [`${key}timestamp_quantization`, ...flags];
  const names = flags[i]!.slice(key.length).split(',').filter(Boolean);
  if (names.includes('timestamp_quantization')) return [...flags];
  return flags.map((f, j) => (j === i ? `${key}${[...names, 'timestamp_quantization'].join(',')}` : f));
}

/** Find the adapter these options choose, or null when none matches. Never throws for "none found". */
export async function findAdapter(options: AdapterOptions): Promise<FoundAdapter | null> {
  const opts = resolveOptions(options);
  const flags = withPreciseTimestamps(opts.dawnFlags);
  if (opts.backend) flags.push(`backend=${opts.backend}`);
  if (opts.adapter) flags.push(`adapter=${opts.adapter}`);
  const extra = extraToggles(); // checked on every adapter, used on hardware ones
  let adapter = await dawn(flags).requestAdapter({ powerPreference: opts.powerPreference });
  if (!adapter) return null;
  let toggles: string[] = [];
  if (!isSoftwareAdapter(adapter.info) && !flags.some((f) => f.startsWith('enable-dawn-features='))) {
    // The same choice again from an instance with the hardware toggles (kept if Dawn still offers it).
    // Dawn's node bindings pass an instance's toggles on to its devices.
    const wanted = [...HARDWARE_TOGGLES, ...extra];
    const toggled = await dawn([...flags, `enable-dawn-features=${wanted.join(',')}`]).requestAdapter({
      powerPreference: opts.powerPreference,
    });
    if (toggled && toggled.info.description === adapter.info.description) {
      adapter = toggled;
      toggles = wanted;
    }
  }
  const info = adapter.info;
  const backend = backendOf(info, opts.backend);
  return { adapter, info, backend, description: describeAdapter(info, backend), toggles };
}

/** Every adapter Dawn offers on this platform's backends (for `webtron info --list`). */
export async function listAdapters(dawnFlags: string[] = []): Promise<FoundAdapter[]> {
  const seen = new Map<string, FoundAdapter>();
  for (const backend of platformBackends()) {
    for (const powerPreference of ['high-performance', 'low-power'] as const) {
      const found = await findAdapter({ backend, powerPreference, dawnFlags, adapter: undefined }).catch(() => null);
      if (found && !seen.has(found.description)) seen.set(found.description, found);
    }
  }
  return [...seen.values()];
}

/** Like `findAdapter`, but a missing adapter is an error that says what to do. */
export async function requireAdapter(options: AdapterOptions): Promise<FoundAdapter> {
  const found = await findAdapter(options);
  if (found) return found;
  const opts = resolveOptions(options);
  const wanted = [opts.backend && `backend '${opts.backend}'`, opts.adapter && `adapter '${opts.adapter}'`].filter(Boolean).join(' and ');
  const available = wanted ? (await listAdapters(opts.dawnFlags)).map((a) => a.description) : [];
  throw new NoAdapterError(
    wanted
      ? `no WebGPU adapter matches ${wanted}; available: ${available.join('; ') || 'none'} — pick one with --backend/--adapter`
      : 'no WebGPU adapter found — run `npm run setup` (installs Mesa lavapipe on Linux) or install your GPU driver',
  );
}
