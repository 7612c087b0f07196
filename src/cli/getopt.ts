/**
 * GNU getopt_long as qemu-img and qemu-io use it: short options from an
 * optstring ("f:o:qU", a colon after a letter means it takes an argument),
 * long options (`--output=json` or `--output json`), clustered flags (`-qU`),
 * attached arguments (`-fqcow2`), `--` ending the options, and permutation
 * (options may follow the file names). Errors carry qemu-img's wording.
 */

export interface LongOption {
  readonly name: string;
  readonly hasArg: boolean;
  /** The key reported for this option (a short letter or a long name). */
  readonly key: string;
}

export interface ParsedOption {
  readonly key: string;
  readonly value: string | undefined;
}

export type GetoptResult =
  | { readonly ok: true; readonly options: readonly ParsedOption[]; readonly operands: readonly string[] }
  | {
      readonly ok: false;
      readonly message: string;
      /** The options before the bad one: glibc's getopt hands them to the caller one by one before it fails. */
      readonly options: readonly ParsedOption[];
      /**
       * For a bad short option, what glibc's getopt prints after "argv[0]: "
       * ("invalid option -- 'x'", "option requires an argument -- 'P'").
       */
      readonly shortDiagnostic?: string;
    };

export interface GetoptSpec {
  readonly shortOptions: string;
  readonly longOptions?: readonly LongOption[];
  /** Stop at the first operand instead of permuting (qemu-io's per-command getopt does not permute in practice). */
  readonly stopAtOperand?: boolean;
}

function shortTakesArg(optstring: string, letter: string): boolean | undefined {
  const i = optstring.indexOf(letter);
  if (i < 0 || letter === ':') return undefined;
  return optstring[i + 1] === ':';
}

/** Parses `argv` (without the program and subcommand names). */
export function getopt(argv: readonly string[], spec: GetoptSpec): GetoptResult {
  const options: ParsedOption[] = [];
  const operands: string[] = [];
  const longs = spec.longOptions ?? [];
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i] ?? '';
    i++;
    if (arg === '--') {
      operands.push(...argv.slice(i));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const exact = longs.find((l) => l.name === name);
      const prefixed = longs.filter((l) => l.name.startsWith(name));
      const match = exact ?? (prefixed.length === 1 ? prefixed[0] : undefined);
      if (!match) {
        if (prefixed.length > 1) return { ok: false, options, message: `option '${arg}' is ambiguous` };
        return { ok: false, options, message: `unrecognized option '${arg}'` };
      }
      if (match.hasArg) {
        if (eq >= 0) options.push({ key: match.key, value: arg.slice(eq + 1) });
        else if (i < argv.length) options.push({ key: match.key, value: argv[i++] });
        else return { ok: false, options, message: `missing argument for option '${arg}'` };
      } else {
        if (eq >= 0) return { ok: false, options, message: `option '--${match.name}' doesn't allow an argument` };
        options.push({ key: match.key, value: undefined });
      }
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j] ?? '';
        const takes = shortTakesArg(spec.shortOptions, letter);
        if (takes === undefined) return { ok: false, options, message: `unrecognized option '-${letter}'`, shortDiagnostic: `invalid option -- '${letter}'` };
        if (!takes) {
          options.push({ key: letter, value: undefined });
          continue;
        }
        if (j + 1 < arg.length) options.push({ key: letter, value: arg.slice(j + 1) });
        else if (i < argv.length) options.push({ key: letter, value: argv[i++] });
        else return { ok: false, options, message: `missing argument for option '-${letter}'`, shortDiagnostic: `option requires an argument -- '${letter}'` };
        break;
      }
      continue;
    }
    operands.push(arg);
    if (spec.stopAtOperand) {
      operands.push(...argv.slice(i));
      break;
    }
  }
  return { ok: true, options, operands };
}
