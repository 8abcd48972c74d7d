/** `node:url` in a browser worker: file URLs name the launcher's paths (the bundle's import.meta.url is file:///@webtron/…). */
export const fileURLToPath = (url: string | URL) => decodeURIComponent(new URL(String(url)).pathname);
export const pathToFileURL = (path: string) => new URL(`file://${encodeURI(path)}`);
const URLClass = globalThis.URL;
export { URLClass as URL };

export default { fileURLToPath, pathToFileURL, URL: URLClass };
