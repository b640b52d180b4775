// Step schedules used by run configs: A1111 learning-rate strings ("5e-3:100, 1e-3:1000, 1e-4") and the
// conditioning-dropout list ([{until_step: 500, rate: 0}, {rate: 0.1}]). Both become the same list of entries.

/** One piece of a schedule: `rate` applies while the global step (0-based) is below `until_step`; the last piece has none. */
export interface ScheduleEntry {
  rate: number;
  until_step?: number | undefined;
}

const FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const INT = /^[+-]?\d+$/;

export const A1111_SCHEDULE_HINT = 'expected "rate:until_step, ..., rate", e.g. "5e-3:100, 1e-3:1000, 1e-4"';

/**
 * Parse an A1111 learning-rate string. Pieces are `rate:until_step` separated by commas; the last piece may omit the
 * step (or give -1, A1111's "to the end"). Steps must increase. Returns the entries or a one-line reason.
 * Unlike A1111, training does not stop at the last step: the last rate holds until `max_train_steps`.
 */
export function parseA1111Schedule(text: string): { ok: true; entries: ScheduleEntry[] } | { ok: false; error: string } {
  const pieces = text.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (pieces.length === 0) return { ok: false, error: 'the schedule is empty' };
  const entries: ScheduleEntry[] = [];
  for (const [i, piece] of pieces.entries()) {
    const parts = piece.split(':').map((p) => p.trim());
    const [rateText, stepText] = parts;
    if (parts.length > 2) return { ok: false, error: `"${piece}" has more than one ':'` };
    if (rateText === undefined || !FLOAT.test(rateText)) return { ok: false, error: `"${rateText ?? piece}" is not a number` };
    const rate = Number(rateText);
    if (!(rate > 0)) return { ok: false, error: `the rate in "${piece}" must be greater than 0` };
    const last = i === pieces.length - 1;
    if (stepText === undefined || stepText === '-1') {
      if (!last) return { ok: false, error: `only the last piece may leave out its step, but "${piece}" is followed by more` };
      entries.push({ rate });
      continue;
    }
    if (!INT.test(stepText) || Number(stepText) < 1) return { ok: false, error: `"${stepText}" in "${piece}" is not a step number (a whole number ≥ 1, or -1 for "to the end")` };
    const step = Number(stepText);
    const previous = entries.at(-1)?.until_step;
    if (previous !== undefined && step <= previous) return { ok: false, error: `steps must increase, but ${step} comes after ${previous}` };
    entries.push({ rate, until_step: step });
  }
  return { ok: true, entries };
}

/** The schedule a `training.learning_rate` value describes (a number is one constant piece). */
export function learningRateSchedule(value: number | string): ScheduleEntry[] {
  if (typeof value === 'number') return [{ rate: value }];
  const parsed = parseA1111Schedule(value);
  if (!parsed.ok) throw new Error(`invalid learning-rate schedule "${value}": ${parsed.error}`);
  return parsed.entries;
}

/** The schedule a `training.cond_dropout` value describes (a number is one constant piece). */
export function condDropoutSchedule(value: number | readonly ScheduleEntry[]): ScheduleEntry[] {
  return typeof value === 'number' ? [{ rate: value }] : value.map((e) => ({ ...e }));
}

/** The rate in force at a 0-based global step. */
export function rateAt(entries: readonly ScheduleEntry[], step: number): number {
  for (const e of entries) if (e.until_step === undefined || step < e.until_step) return e.rate;
  const last = entries.at(-1);
  if (!last) throw new Error('empty schedule');
  return last.rate;
}

/** Problems with a cond_dropout list (index into the list, key, message); empty when it is valid. */
export function checkStepSchedule(entries: readonly ScheduleEntry[]): { index: number; key: string; message: string }[] {
  const problems: { index: number; key: string; message: string }[] = [];
  let previous: number | undefined;
  entries.forEach((e, i) => {
    const last = i === entries.length - 1;
    if (last && e.until_step !== undefined) {
      problems.push({ index: i, key: 'until_step', message: 'the last entry must not have until_step (its rate holds to the end of training)' });
    } else if (!last && e.until_step === undefined) {
      problems.push({ index: i, key: 'until_step', message: 'every entry but the last needs until_step (the step at which the next entry takes over)' });
    } else if (e.until_step !== undefined) {
      if (previous !== undefined && e.until_step <= previous) {
        problems.push({ index: i, key: 'until_step', message: `until_step must increase: ${e.until_step} is not after ${previous}` });
      }
      previous = e.until_step;
    }
  });
  return problems;
}
