import type { CommandModule } from 'yargs';
import { inspectPath, type FileReport } from '../../checkpoints/inspect.js';
import { ellipsis, formatCount, formatSize, keyValueTable } from '../render.js';

interface Args {
  paths: string[];
  json?: boolean;
}

function render(r: FileReport, indent = ''): string {
  const dtypes = Object.entries(r.dtypes).map(([d, n]) => `${d} ${n}`).join(', ');
  const rows: Array<[string, string]> = [
    ['path', r.path],
    ['format', `${r.format} (${formatSize(r.bytes)})`],
    ['kind', r.detection.summary],
  ];
  if (r.tensorCount) rows.push(['tensors', `${formatCount(r.tensorCount)}${dtypes ? ` (${dtypes})` : ''}`], ['params', formatCount(r.paramCount)]);
  const meta = Object.entries(r.metadata);
  if (meta.length) rows.push(['metadata', meta.map(([k, v]) => `${k}: ${ellipsis(v.replace(/\n/g, '\\n'))}`).join('\n')]);
  let out = keyValueTable(rows, indent);
  for (const [name, c] of Object.entries(r.components ?? {})) out += `\n\n${indent}${name}/\n${render(c, `${indent}  `)}`;
  return out;
}

export const inspect: CommandModule<object, Args> = {
  command: 'inspect <paths..>',
  describe: 'Say what a model file or diffusers folder is: format, kind, tensors, dtypes, parameters, metadata',
  builder: (y) =>
    y
      .positional('paths', { type: 'string', array: true, demandOption: true, describe: 'files (.safetensors, .ckpt, .pt, .bin, .png) or diffusers folders' })
      .option('json', { type: 'boolean', describe: 'print machine-readable JSON (one array of reports)' })
      .example('$0 inspect model.safetensors', '')
      .example('$0 inspect checkpoints/tiny-shapes --json', ''),
  handler: async ({ paths, json }) => {
    const reports: FileReport[] = [];
    for (const p of paths) reports.push(await inspectPath(p));
    if (json) process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
    else process.stdout.write(`${reports.map((r) => render(r)).join('\n\n')}\n`);
  },
};
