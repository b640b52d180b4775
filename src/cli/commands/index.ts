// Every command, in one explicit list (no directory magic: yargs' commandDir does not work under ESM).
import type { CommandModule } from 'yargs';
import { config } from './config.js';
import { dataset } from './dataset.js';
import { dreambooth } from './dreambooth.js';
import { embed } from './embed.js';
import { hypernetwork } from './hypernetwork.js';
import { inspect } from './inspect.js';
import { lora } from './lora.js';
import { merge } from './merge.js';
import { sample } from './sample.js';
import { tokenize } from './tokenize.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [sample, embed, hypernetwork, dreambooth, lora, merge, inspect, tokenize, config, dataset];
