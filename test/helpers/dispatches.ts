import type { Graph } from '../../src/nn/graph.js';
import type { Runner } from '../../src/nn/runner.js';

/** The arguments of one `Runner.dispatch`: shader, entry, constants, uniforms, bindings, workgroups, defines, tag. */
export type DispatchCall = Parameters<Runner['dispatch']>;

/**
 * The dispatches `g` records from now on, in order, as `pick` gives them (each call's arguments
 * without it; a dispatch it gives `undefined` for is left out). Each dispatch still runs.
 */
export function recordDispatches(g: Graph): DispatchCall[];
export function recordDispatches<T>(g: Graph, pick: (call: DispatchCall) => T | undefined): T[];
export function recordDispatches<T>(g: Graph, pick?: (call: DispatchCall) => T | undefined): (T | DispatchCall)[] {
  const seen: (T | DispatchCall)[] = [];
  const dispatch = g.runner.dispatch.bind(g.runner);
  g.runner.dispatch = (...args: DispatchCall) => {
    const picked = pick ? pick(args) : args;
    if (picked !== undefined) seen.push(picked);
    return dispatch(...args);
  };
  return seen;
}
