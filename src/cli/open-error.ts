import { describeError } from './errors-text.js';

/**
 * "Could not open 'f': reason", unless the engine's message already says which
 * file it could not open.
 */
export function openErrorText(path: string, e: unknown): string {
  const text = describeError(e);
  if (/^(Could not|Cannot) open '/.test(text)) return text;
  return `Could not open '${path}': ${text}`;
}
