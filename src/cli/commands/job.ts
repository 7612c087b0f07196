/**
 * `vdisk job <verb> --qmp PATH ...`: block jobs of a running `vdisk` daemon
 * (or qemu-storage-daemon) through its QMP socket.
 *
 *   list                                  query-block-jobs, one line per job
 *   commit -d DEV [--top[-node] X] [--base[-node] X] [--backing-file F]
 *   stream -d DEV [--base[-node] X] [--backing-file F]
 *   mirror -d DEV --target T --sync full|top|none [--blockdev] [--format F]
 *          [--mode absolute-paths|existing] [--node-name N] [--granularity N]
 *          [--buf-size N] [--copy-mode background|write-blocking]
 *   complete|cancel|pause|resume ID       block-job-* verbs (cancel: --force)
 *   set-speed ID SPEED
 *   wait ID [--ready] [-p]                until the job ends (or is ready), with qemu-img's progress
 *
 * The start verbs take --job-id, --speed, and -w (wait) / -p (progress).
 */
import { type CliContext, reportError, reportUsage } from '../context.js';
import { parseQemuSize } from '../create-options.js';
import { ProgressPrinter } from '../format/progress.js';
import { getopt, type LongOption } from '../getopt.js';
import { QmpClient, type QmpEventMessage } from '../qmp-client.js';

const VALUE_OPTIONS = [
  'qmp', 'device', 'job-id', 'speed', 'top', 'top-node', 'base', 'base-node', 'backing-file', 'target', 'sync', 'format',
  'mode', 'node-name', 'granularity', 'buf-size', 'copy-mode', 'on-error', 'on-source-error', 'on-target-error',
] as const;
const FLAG_OPTIONS = ['blockdev', 'force', 'ready', 'wait', 'progress', 'help'] as const;
const LONG: LongOption[] = [
  ...VALUE_OPTIONS.map((name) => ({ name, hasArg: true, key: name })),
  ...FLAG_OPTIONS.map((name) => ({ name, hasArg: false, key: name })),
];
const INT_ARGS = new Set(['speed', 'granularity', 'buf-size']);
const POLL_MS = 200;

type Opts = Map<string, string>;

export async function jobCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const parsed = getopt(rest, { shortOptions: 'd:wph', longOptions: LONG });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const opts: Opts = new Map();
  for (const { key, value } of parsed.options) {
    const name = key === 'd' ? 'device' : key === 'w' ? 'wait' : key === 'p' ? 'progress' : key === 'h' ? 'help' : key;
    opts.set(name, value ?? '');
  }
  if (verb === undefined || opts.has('help')) {
    ctx.out.stdout('usage: vdisk job list|commit|stream|mirror|complete|cancel|pause|resume|set-speed|wait --qmp PATH [options]\n');
    return verb === undefined ? 1 : 0;
  }
  const socket = opts.get('qmp');
  if (socket === undefined) return reportUsage(ctx, 'Expecting --qmp PATH');
  let client: QmpClient | null = null;
  try {
    client = await QmpClient.connect(socket);
    return await runVerb(ctx, client, { verb, opts, operands: parsed.operands });
  } catch (e) {
    reportError(ctx, e instanceof Error ? e.message : String(e));
    return 1;
  } finally {
    client?.close();
  }
}

interface VerbRequest {
  readonly verb: string;
  readonly opts: Opts;
  readonly operands: readonly string[];
}

async function runVerb(ctx: CliContext, client: QmpClient, req: VerbRequest): Promise<number> {
  const { verb, opts, operands } = req;
  const id = operands[0];
  switch (verb) {
    case 'list':
      return listJobs(ctx, client);
    case 'commit':
      return startJob(ctx, client, { command: 'block-commit', opts, keys: ['device', 'job-id', 'speed', 'top', 'top-node', 'base', 'base-node', 'backing-file', 'on-error'] });
    case 'stream':
      return startJob(ctx, client, { command: 'block-stream', opts, keys: ['device', 'job-id', 'speed', 'base', 'base-node', 'backing-file', 'on-error'] });
    case 'mirror': {
      const blockdev = opts.has('blockdev');
      const keys = ['device', 'job-id', 'speed', 'target', 'sync', 'granularity', 'buf-size', 'copy-mode', 'on-source-error', 'on-target-error'];
      if (!blockdev) keys.push('format', 'mode', 'node-name');
      return startJob(ctx, client, { command: blockdev ? 'blockdev-mirror' : 'drive-mirror', opts, keys });
    }
    case 'complete':
    case 'pause':
    case 'resume':
    case 'cancel': {
      if (id === undefined) return reportUsage(ctx, 'Expecting a job id');
      const args: Record<string, unknown> = { device: id };
      if (verb === 'cancel' && opts.has('force')) args['force'] = true;
      await client.execute(`block-job-${verb}`, args);
      return 0;
    }
    case 'set-speed': {
      const speed = operands[1] === undefined ? undefined : parseQemuSize(operands[1]);
      if (id === undefined || speed === undefined) return reportUsage(ctx, 'Expecting a job id and a speed');
      await client.execute('block-job-set-speed', { device: id, speed });
      return 0;
    }
    case 'wait':
      if (id === undefined) return reportUsage(ctx, 'Expecting a job id');
      return waitJob(ctx, client, { id, untilReady: opts.has('ready'), progress: opts.has('progress') });
    default:
      return reportUsage(ctx, `Unknown job verb: ${verb}`);
  }
}

async function listJobs(ctx: CliContext, client: QmpClient): Promise<number> {
  const jobs = (await client.execute('query-block-jobs')) as Array<Record<string, unknown>>;
  for (const j of jobs) {
    const error = j['error'] === undefined ? '' : ` error=${String(j['error'])}`;
    ctx.out.stdout(`${String(j['device'])} ${String(j['type'])} ${String(j['status'])} ${String(j['offset'])}/${String(j['len'])} speed=${String(j['speed'])}${error}\n`);
  }
  return 0;
}

async function startJob(ctx: CliContext, client: QmpClient, request: { command: string; opts: Opts; keys: readonly string[] }): Promise<number> {
  const { command, opts, keys } = request;
  const args: Record<string, unknown> = {};
  for (const k of keys) {
    const v = opts.get(k);
    if (v === undefined) continue;
    if (INT_ARGS.has(k)) {
      const n = parseQemuSize(v);
      if (n === undefined) return reportUsage(ctx, `Invalid value for --${k}: ${v}`);
      args[k] = n;
    } else args[k] = v;
  }
  if (args['device'] === undefined) return reportUsage(ctx, 'Expecting -d DEVICE');
  await client.execute(command, args);
  if (!opts.has('wait') && !opts.has('progress')) return 0;
  const id = String(args['job-id'] ?? args['device']);
  return waitJob(ctx, client, { id, untilReady: command !== 'block-stream' && !(command === 'block-commit' && (args['top'] ?? args['top-node']) !== undefined), progress: opts.has('progress') });
}

/**
 * Waits for the job to end (or to be ready), printing qemu-img's progress
 * from query-block-jobs. Exit status 1 when it failed or was cancelled.
 */
async function waitJob(ctx: CliContext, client: QmpClient, request: { id: string; untilReady: boolean; progress: boolean }): Promise<number> {
  const { id } = request;
  const progress = new ProgressPrinter(request.progress ? ctx.out.stdout : undefined);
  const seen: { outcome: QmpEventMessage | null } = { outcome: null };
  let wake: () => void = () => undefined;
  const off = client.onEvent((e) => {
    const device = e.data?.['device'];
    if (device !== id) return;
    if (e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED' || (request.untilReady && e.event === 'BLOCK_JOB_READY')) {
      seen.outcome = e;
      wake();
    }
  });
  try {
    progress.set(0);
    while (!seen.outcome) {
      const jobs = (await client.execute('query-block-jobs')) as Array<Record<string, unknown>>;
      const job = jobs.find((j) => j['device'] === id);
      if (!job && !seen.outcome) {
        reportError(ctx, `Block job '${id}' not found`);
        return 1;
      }
      if (job) {
        const len = Number(job['len']);
        if (len > 0) progress.set((100 * Number(job['offset'])) / len);
        if (request.untilReady && job['ready'] === true) break;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, POLL_MS);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    off();
  }
  const end = seen.outcome;
  const error = end?.data?.['error'];
  if (end?.event === 'BLOCK_JOB_CANCELLED' || error !== undefined) {
    progress.end();
    reportError(ctx, error !== undefined ? `Block job failed: ${String(error)}` : `Block job '${id}' was cancelled`);
    return 1;
  }
  progress.set(100);
  progress.end();
  return 0;
}
