import { SdtrainError } from '../errors.js';

/** A command-line usage mistake (unknown flag, missing argument): exit code 2, with a pointer to --help. */
export class UsageError extends SdtrainError {
  override readonly exitCode: number = 2;
  constructor(message: string) {
    super(`${message}\n(run 'sdtrain --help' or 'sdtrain <command> --help')`);
  }
}
