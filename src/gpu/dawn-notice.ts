/**
 * Dawn's two start-up notices that a Vulkan driver offers more dynamic buffers than Dawn uses. Native
 * code writes them straight to file descriptor 2, so only a parent process can drop them: the CLI's
 * entry point (bin/webtron.js), the launcher for a failed worker's last lines, and the test runner.
 */
export const DAWN_NOTICE = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+/;

/** `text` less its lines that are Dawn's notices (every other line, Dawn's real errors included, unchanged). */
export function withoutDawnNotices(text: string): string {
  if (!text.includes('artificially reduced')) return text;
  return text
    .split('\n')
    .filter((line) => !DAWN_NOTICE.test(line))
    .join('\n');
}
