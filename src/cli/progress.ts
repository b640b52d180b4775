// Progress display: a cli-progress bar on a TTY, a plain line every so often otherwise (CI logs).
import cliProgress from 'cli-progress';

export interface Progress {
  start(total: number, label: string): void;
  update(value: number, payload?: Record<string, string | number>): void;
  stop(): void;
  /** Print a line without breaking the bar. */
  log(line: string): void;
}

export function createProgress(opts: { format?: string; plainEvery?: number } = {}): Progress {
  const tty = process.stderr.isTTY === true;
  if (!tty) {
    let total = 0;
    let label = '';
    let last = -Infinity;
    const every = opts.plainEvery ?? 10;
    return {
      start(t, l) {
        total = t;
        label = l;
        last = -Infinity;
      },
      update(v, payload) {
        if (v - last >= every || v === total) {
          last = v;
          const extra = payload ? Object.entries(payload).map(([k, x]) => ` ${k}=${x}`).join('') : '';
          process.stderr.write(`${label} ${v}/${total}${extra}\n`);
        }
      },
      stop() {},
      log(line) {
        process.stderr.write(`${line}\n`);
      },
    };
  }
  const bar = new cliProgress.SingleBar(
    { format: opts.format ?? '{label} [{bar}] {value}/{total} {eta_formatted} {extra}', stream: process.stderr, hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  let running = false;
  return {
    start(total, label) {
      if (running) bar.stop();
      bar.start(total, 0, { label, extra: '' });
      running = true;
    },
    update(v, payload) {
      bar.update(v, { extra: payload ? Object.entries(payload).map(([k, x]) => `${k} ${x}`).join(' ') : '' });
    },
    stop() {
      if (running) bar.stop();
      running = false;
    },
    log(line) {
      if (running) bar.stop();
      process.stderr.write(`${line}\n`);
      running = false;
    },
  };
}
