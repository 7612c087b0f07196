/**
 * `vdisk serve`: serve an image over NBD, with qemu-nbd's options.
 *
 *   vdisk serve [IMAGE] [-f FMT] [-k PATH | -b ADDR -p PORT] [-x NAME] [-D TEXT]
 *               [-r] [-t] [-e N] [--cache MODE] [-n] [-A] [-v]
 *
 * With no IMAGE, a default 1 GiB image in the data directory is served and
 * the ways to connect are printed.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import {
  ManagedDaemon,
  ServeDaemon,
  TlsObjects,
  dataDirectory,
  ensureDefaultImage,
  parseKeyval,
  stopOnSignals,
  type ManagedItem,
  type ServeOptions,
} from '../../daemon/index.js';
import { createImage, type ImageNode } from '../../block/index.js';
import type { CacheMode, FormatName } from '../../formats/driver.js';
import type { ListenAddress } from '../../nbd/index.js';
import { parseCacheMode } from '../cache-mode.js';
import type { CliContext } from '../context.js';
import { openOperand } from '../image-operand.js';
import { openTuned } from '../qcow2-tuning.js';

const USAGE = `Usage: vdisk serve [OPTIONS] [IMAGE]
Serve IMAGE over NBD (options as qemu-nbd). Without IMAGE, serve a default
1 GiB image kept in $VDISK_DATA_DIR (default ~/.local/share/vdisk).

  -k, --socket=PATH         listen on a Unix socket
  -b, --bind=IFACE          interface to bind to (default 0.0.0.0)
  -p, --port=PORT           TCP port (default 10809)
  -x, --export-name=NAME    export name (default "")
  -D, --description=TEXT    human-readable export description
  -f, --format=FORMAT       image format (raw, qcow2, ploop); probed if absent
      --image-opts          IMAGE is an option string (driver=qcow2,file.filename=PATH,...)
  -r, --read-only           export read-only
  -t, --persistent          keep serving after the last client disconnects
  -e, --shared=NUM          clients served at once (default 1, 0 = unlimited)
      --cache=MODE          none, writeback (default), writethrough, directsync, unsafe
  -n, --nocache             same as --cache=none
  -A, --allocation-depth    accepted; qemu:allocation-depth is always offered
  -B, --bitmap=NAME         also offer persistent bitmap NAME as qemu:dirty-bitmap:NAME
      --fork                run in the background once the server is listening
      --pid-file=PATH       write the server's process id to PATH
      --object=OBJ          tls-creds-x509,id=ID,dir=DIR,endpoint=server or
                            tls-creds-psk,id=ID,dir=DIR,endpoint=server (DIR/keys.psk)
      --tls-creds=ID        require TLS with the credentials object ID
  -v, --verbose             log connection problems to stderr
  -h, --help                show this help

Managed form (as qemu-storage-daemon; items apply in order):
  vdisk serve [--object OBJ] [--blockdev OPTS] [--nbd-server addr.type=unix,addr.path=P]
              [--export type=nbd,id=ID,node-name=N[,name=X][,writable=on]]
              [--qmp PATH | --chardev socket,path=P,server=on,wait=off,id=C --monitor chardev=C]
`;

const FORMATS: Readonly<Record<string, FormatName>> = { raw: 'raw', qcow2: 'qcow2', ploop: 'ploop', parallels: 'ploop' };

/** Options qemu-nbd has that vdisk does not implement yet: refused by name rather than silently ignored. */
const UNSUPPORTED: Readonly<Record<string, { type: 'string' | 'boolean'; short?: string }>> = {
  offset: { type: 'string', short: 'o' },
  list: { type: 'boolean', short: 'L' },
  'tls-authz': { type: 'string' },
  'tls-hostname': { type: 'string' },
  connect: { type: 'string', short: 'c' },
  disconnect: { type: 'boolean', short: 'd' },
  snapshot: { type: 'boolean', short: 's' },
  'load-snapshot': { type: 'string', short: 'l' },
  trace: { type: 'string', short: 'T' },
  'selinux-label': { type: 'string' },
};

/** Options that select qemu-storage-daemon's form. */
const MANAGED_KINDS = ['qmp', 'blockdev', 'nbd-server', 'export', 'chardev', 'monitor'] as const;

interface Parsed {
  readonly options: Omit<ServeOptions, 'image' | 'log' | 'tls'>;
  /** Items of the managed form, in command-line order (objects included); empty for the simple form. */
  readonly managed: ManagedItem[];
  readonly objects: string[];
  readonly tlsCreds: string | undefined;
  readonly image: string | undefined;
  readonly verbose: boolean;
  readonly fork: boolean;
  readonly pidFile: string | undefined;
  /** --image-opts: IMAGE is an option string (driver=...,file.filename=...), opened as qemu-img commands open one. */
  readonly imageOpts: boolean;
}

class UsageError extends Error {}

function parseServeArgs(argv: readonly string[]): Parsed | 'help' {
  const { values, positionals, tokens } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    tokens: true,
    options: {
      qmp: { type: 'string', multiple: true },
      blockdev: { type: 'string', multiple: true },
      'nbd-server': { type: 'string', multiple: true },
      export: { type: 'string', multiple: true },
      chardev: { type: 'string', multiple: true },
      monitor: { type: 'string', multiple: true },
      object: { type: 'string', multiple: true },
      'tls-creds': { type: 'string' },
      socket: { type: 'string', short: 'k' },
      bind: { type: 'string', short: 'b' },
      port: { type: 'string', short: 'p' },
      'export-name': { type: 'string', short: 'x' },
      description: { type: 'string', short: 'D' },
      format: { type: 'string', short: 'f' },
      'read-only': { type: 'boolean', short: 'r' },
      persistent: { type: 'boolean', short: 't' },
      shared: { type: 'string', short: 'e' },
      cache: { type: 'string' },
      nocache: { type: 'boolean', short: 'n' },
      'allocation-depth': { type: 'boolean', short: 'A' },
      bitmap: { type: 'string', short: 'B', multiple: true },
      verbose: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
      aio: { type: 'string' },
      discard: { type: 'string' },
      'detect-zeroes': { type: 'string' },
      fork: { type: 'boolean' },
      'pid-file': { type: 'string' },
      'image-opts': { type: 'boolean' },
      ...UNSUPPORTED,
    },
  });
  if (values.help) return 'help';
  for (const name of Object.keys(UNSUPPORTED)) {
    if ((values as Record<string, unknown>)[name] !== undefined) throw new UsageError(`option --${name} is not supported yet`);
  }
  if (positionals.length > 1) throw new UsageError(`expected one image, got ${positionals.length}: ${positionals.join(' ')}`);
  const managed: ManagedItem[] = [];
  const objects: string[] = [];
  for (const t of tokens) {
    if (t.kind !== 'option' || t.value === undefined) continue;
    if (t.name === 'object') {
      objects.push(t.value);
      managed.push({ kind: 'object', text: t.value });
    } else if (t.name === 'qmp') managed.push({ kind: 'qmp', path: t.value });
    else if ((MANAGED_KINDS as readonly string[]).includes(t.name)) managed.push({ kind: t.name as Exclude<ManagedItem['kind'], 'qmp'>, text: t.value });
  }
  const isManaged = managed.some((m) => m.kind !== 'object');
  if (isManaged && positionals.length > 0) throw new UsageError('an IMAGE cannot be combined with --qmp, --blockdev, --nbd-server or --export; use --blockdev');
  if (values['image-opts'] && positionals.length === 0) throw new UsageError('--image-opts needs an IMAGE option string (driver=...,file.filename=PATH)');

  let address: ListenAddress;
  if (values.socket !== undefined) {
    if (values.port !== undefined || values.bind !== undefined) throw new UsageError('--socket cannot be combined with --bind or --port');
    address = { socketPath: values.socket };
  } else {
    const port = values.port === undefined ? 10809 : Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`invalid port '${values.port ?? ''}'`);
    address = { host: values.bind ?? '0.0.0.0', port };
  }
  const shared = values.shared === undefined ? 1 : Number(values.shared);
  if (!Number.isInteger(shared) || shared < 0) throw new UsageError(`invalid shared device number '${values.shared ?? ''}'`);
  let cache: CacheMode | undefined;
  if (values.cache !== undefined) {
    cache = parseCacheMode(values.cache);
    if (cache === undefined) throw new UsageError(`invalid cache mode '${values.cache}'`);
  }
  if (values.nocache) cache = 'none';
  let format: FormatName | undefined;
  if (values.format !== undefined) {
    format = FORMATS[values.format];
    if (!format) throw new UsageError(`unknown format '${values.format}'`);
  }
  return {
    managed: isManaged ? managed : [],
    objects,
    tlsCreds: values['tls-creds'],
    image: positionals[0],
    verbose: values.verbose === true,
    fork: values.fork === true,
    pidFile: values['pid-file'],
    imageOpts: values['image-opts'] === true,
    options: {
      address,
      exportName: values['export-name'] ?? '',
      maxClients: shared,
      readOnly: values['read-only'] === true,
      persistent: values.persistent === true,
      ...(values.bitmap ? { bitmaps: values.bitmap } : {}),
      ...(values.description !== undefined ? { description: values.description } : {}),
      ...(cache ? { cache } : {}),
      ...(format ? { format } : {}),
    },
  };
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Runs `vdisk serve`; resolves with the exit status once the server has stopped. */
export async function serveCommand(argv: readonly string[]): Promise<number> {
  let parsed: Parsed | 'help';
  try {
    parsed = parseServeArgs(argv);
  } catch (e) {
    process.stderr.write(`vdisk serve: ${e instanceof Error ? e.message : String(e)}\nTry 'vdisk serve --help' for more information.\n`);
    return 1;
  }
  if (parsed === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (parsed.fork) return forkServer();
  if (parsed.managed.length > 0) return serveManaged(parsed);
  // A server started by --fork stops writing to stderr once its parent has returned (the pipe is gone then).
  let detached = false;
  const log = parsed.verbose
    ? (line: string) => {
        if (!detached) process.stderr.write(`vdisk serve: ${line}\n`);
      }
    : undefined;
  try {
    let image = parsed.image;
    let options = parsed.options;
    let announce = false;
    if (image === undefined) {
      const dflt = await ensureDefaultImage(dataDirectory());
      image = dflt.path;
      options = { ...options, format: dflt.format, persistent: true };
      announce = true;
      if (dflt.created) process.stdout.write(`Created ${dflt.format} image '${dflt.path}' (1 GiB)\n`);
    }
    // qemu-nbd checks every --object, and uses the one --tls-creds names.
    const objects = loadObjects(parsed.objects);
    const tls = parsed.tlsCreds !== undefined ? objects.upgrader(parsed.tlsCreds) : undefined;
    const opened = parsed.imageOpts ? await openImageOptions(image, options) : undefined;
    const daemon = await ServeDaemon.start({ ...options, image, ...(opened ? { opened } : {}), ...(log ? { log } : {}), ...(tls ? { tls } : {}) });
    const removeHandlers = stopOnSignals(daemon);
    if (parsed.pidFile !== undefined) fs.writeFileSync(parsed.pidFile, `${process.pid}\n`);
    // Tell a parent started with --fork that the server is listening.
    if (process.send) {
      process.send('vdisk-serve-ready');
      process.disconnect();
      detached = true;
    }
    if (announce) {
      process.stdout.write(
        `Serving '${image}' at ${daemon.uri}\n` +
          `Connect with:\n` +
          `  qemu-img info ${shellQuote(daemon.uri)}\n` +
          `  qemu-io -f raw ${shellQuote(daemon.uri)}\n` +
          `  nbdinfo ${shellQuote(daemon.uri)}\n` +
          `Stop with Ctrl-C.\n`,
      );
    }
    try {
      await daemon.stopped;
    } finally {
      removeHandlers();
      if (parsed.pidFile !== undefined) fs.rmSync(parsed.pidFile, { force: true });
    }
    return 0;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`vdisk serve: ${msg}\n`);
    return 1;
  }
}

/**
 * Opens an --image-opts operand the way qemu-img commands do (image-operand.ts:
 * generic options, cache.*, qcow2's cache sizes; -r, --cache and -n as the
 * command's request), with qemu-nbd's error text.
 */
async function openImageOptions(text: string, options: Parsed['options']): Promise<ImageNode> {
  if (options.format !== undefined) throw new Error('--image-opts and -f are mutually exclusive');
  const ctx: CliContext = {
    out: { stdout: (t) => void process.stdout.write(t), stderr: (t) => void process.stderr.write(t) },
    engine: { openImage: openTuned, createImage },
  };
  const opened = await openOperand(ctx, text, { format: undefined, imageOpts: true, readOnly: options.readOnly === true, cache: options.cache });
  if (!opened.ok) throw new Error(`Failed to blk_new_open '${text}': ${opened.reason}`);
  return opened.node;
}

function loadObjects(texts: readonly string[]): TlsObjects {
  const objects = new TlsObjects();
  for (const o of texts) {
    const { 'qom-type': qomType, ...props } = parseKeyval(o, 'qom-type');
    objects.add(String(qomType), props);
  }
  return objects;
}

/** The managed form: runs until QMP `quit`, SIGINT or SIGTERM. */
async function serveManaged(parsed: Parsed): Promise<number> {
  const log = parsed.verbose ? (line: string) => process.stderr.write(`vdisk serve: ${line}\n`) : undefined;
  let m: ManagedDaemon;
  try {
    m = await ManagedDaemon.start(parsed.managed, log);
  } catch (e) {
    process.stderr.write(`vdisk serve: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  const handler = (): void => void m.stop().catch(() => undefined);
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  if (parsed.pidFile !== undefined) fs.writeFileSync(parsed.pidFile, `${process.pid}\n`);
  if (process.send) {
    process.send('vdisk-serve-ready');
    process.disconnect();
  }
  try {
    await m.stopped;
    return 0;
  } catch (e) {
    process.stderr.write(`vdisk serve: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  } finally {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
    if (parsed.pidFile !== undefined) fs.rmSync(parsed.pidFile, { force: true });
  }
}

/**
 * --fork: run this same command line without --fork as a detached child and
 * return once it reports that it is listening (as qemu-nbd --fork does), or
 * fail with its status if it exits first.
 */
function forkServer(): Promise<number> {
  const args = [...process.execArgv, ...process.argv.slice(1).filter((a) => a !== '--fork')];
  // The child's stderr is relayed only until it is ready, so that `$(vdisk serve --fork ...)` returns.
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  child.stderr?.on('data', (d: Buffer) => process.stderr.write(d));
  return new Promise<number>((resolve) => {
    child.once('message', (m) => {
      if (m !== 'vdisk-serve-ready') return;
      child.disconnect();
      child.stderr?.destroy();
      child.unref();
      resolve(0);
    });
    child.once('exit', (code) => resolve(code === 0 ? 1 : (code ?? 1)));
    child.once('error', (e) => {
      process.stderr.write(`vdisk serve: cannot start the background server: ${e.message}\n`);
      resolve(1);
    });
  });
}
