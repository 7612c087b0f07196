/**
 * qemu-io's `help`: every command in name order (qemu-io keeps its table
 * sorted), one line each, or one command's line and extended help.
 */
import { IO_COMMANDS } from './commands.js';
import { FILE_COMMANDS } from './file-commands.js';

interface HelpEntry {
  readonly name: string;
  readonly altname?: string;
  readonly args?: string;
  readonly oneline: string;
  readonly help?: string;
}

/** help and quit are handled by the line runner, but listed like the others. */
const OWN_ENTRIES: readonly HelpEntry[] = [
  { name: 'help', altname: '?', args: '[command]', oneline: 'help for one or all commands' },
  { name: 'quit', altname: 'q', oneline: 'exit the program' },
];

function allEntries(): HelpEntry[] {
  return [...IO_COMMANDS, ...FILE_COMMANDS, ...OWN_ENTRIES].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** "name [args] -- oneline", the name as the user typed it (an alias stays an alias). */
function oneline(entry: HelpEntry, typed: string): string {
  return `${typed} ${entry.args !== undefined ? `${entry.args} ` : ''}-- ${entry.oneline}\n`;
}

/** `help` (no name) or `help name`; undefined for a name that is no command. */
export function helpText(name: string | undefined): string | undefined {
  const entries = allEntries();
  if (name === undefined) return `${entries.map((e) => oneline(e, e.name)).join('')}\nUse 'help commandname' for extended help.\n`;
  const entry = entries.find((e) => e.name === name || e.altname === name);
  if (!entry) return undefined;
  return oneline(entry, name) + (entry.help ?? '');
}
