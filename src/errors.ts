// Typed errors. Library code throws these; `src/cli/errors.ts` maps them to one readable line and an exit code.

/** Base class: an error whose message is written for the user (one line, names the file/key/line at fault). */
export class SdtrainError extends Error {
  /** Process exit code the CLI uses for this kind of error. */
  readonly exitCode: number = 1;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A file (tensor container, image, caption, ...) that is malformed or unreadable. */
export class FormatError extends SdtrainError {
  constructor(
    readonly file: string,
    detail: string,
    readonly key?: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}${key !== undefined ? ` [${key}]` : ''}: ${detail}`, options);
  }
}

/** A pickle that asks for something other than the tensors/containers torch.save writes. Nothing was executed. */
export class UnsafePickleError extends FormatError {
  constructor(
    file: string,
    readonly global: string,
  ) {
    super(file, `refusing to load: the pickle names '${global}', which is not on the allow-list of torch.save types (nothing was executed)`);
  }
}

/** A configuration value that is wrong; the message names the file, the key and the line. */
export class ConfigError extends SdtrainError {
  override readonly exitCode: number = 2;
}

/** The wasm backend ran out of its 32-bit heap. */
export class WasmOutOfMemoryError extends SdtrainError {
  override readonly exitCode: number = 3;
}

/**
 * A checkpoint whose tensors do not fit the model: keys the model needs that the file lacks, tensors the file has that
 * the model does not know, and tensors of the wrong shape, all collected before anything is loaded.
 */
export class CheckpointMismatchError extends SdtrainError {
  constructor(
    readonly file: string,
    readonly component: string,
    readonly missing: readonly string[],
    readonly unexpected: readonly string[],
    /** "key (file [a, b], model expects [c, d])" */
    readonly misshaped: readonly string[],
  ) {
    const parts = [
      listSome(missing, (n) => `missing ${n}`),
      listSome(unexpected, (n) => `unexpected ${n}`),
      listSome(misshaped, (n) => `${n} with the wrong shape`),
    ].filter((s) => s !== '');
    super(`${file}: the ${component} weights do not match the model: ${parts.join('; ')}`);
  }
}

/** "missing 12 keys: a, b, c, … and 9 more" ('' for none). */
function listSome(keys: readonly string[], phrase: (count: string) => string, shown = 3): string {
  if (keys.length === 0) return '';
  const more = keys.length > shown ? `, … and ${keys.length - shown} more` : '';
  return `${phrase(`${keys.length} key${keys.length === 1 ? '' : 's'}`)}: ${keys.slice(0, shown).join(', ')}${more}`;
}
