// Make the built CLI executable (npm links `bin` entries but the mode bit comes from the file).
import { chmodSync, existsSync } from 'node:fs';
const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (existsSync(main)) chmodSync(main, 0o755);
