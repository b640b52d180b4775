// Small text renderers shared by commands.

/** `key  value` rows with aligned keys; multi-line values are indented under the value column. */
export function keyValueTable(rows: Array<[string, string]>, indent = ''): string {
  const w = Math.max(0, ...rows.map(([k]) => k.length));
  return rows
    .map(([k, v]) => `${indent}${k.padEnd(w)}  ${v.split('\n').join(`\n${indent}${' '.repeat(w + 2)}`)}`)
    .join('\n');
}

export const formatCount = (n: number): string => n.toLocaleString('en-US');

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = bytes / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** Shorten long metadata values for a terminal. */
export const ellipsis = (s: string, max = 100): string => (s.length > max ? `${s.slice(0, max - 1)}…` : s);
