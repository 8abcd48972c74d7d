/** `node:os` in a browser worker: a fixed home (nothing is cached there: the launcher refuses writes outside the job's folders), no interfaces. */
export const homedir = () => '/@webtron/home';
export const tmpdir = () => '/@webtron/tmp';
export const hostname = () => 'browser';
export const networkInterfaces = () => ({});
export const cpus = () => [] as unknown[];
export const availableParallelism = () => navigator.hardwareConcurrency || 1;
export const platform = () => 'browser';
export const EOL = '\n';
export const constants = { signals: {} as Record<string, number> };

export default { homedir, tmpdir, hostname, networkInterfaces, cpus, availableParallelism, platform, EOL, constants };
