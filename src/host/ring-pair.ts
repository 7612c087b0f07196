/**
 * Two io_urings for one O_DIRECT file: a plain one, and a polled one
 * (IORING_SETUP_SQPOLL) used only while many requests are in flight.
 *
 * Why both: submitting to a plain ring runs the start of every request (for an
 * ext4 direct write, its whole submission path) on the JS thread inside
 * io_uring_enter: 33 % of the JS thread's time in 4 KiB overwrites at depth 32,
 * where QEMU spreads that cost over its worker threads. A polled ring's kernel
 * thread does it on the other core instead (depth 32 overwrites 0.93 s → 0.55 s
 * on 2 vCPUs). At low depth the same thread only competes with the JS thread
 * and the device's interrupts for the two cores (sequential depth-1 writes up
 * to 3x slower), so below POLL_DEPTH requests go to the plain ring. The polled
 * ring is opened the first time the depth is reached; its thread sleeps 2 ms
 * after its last request.
 *
 * VDISK_RING_SQPOLL=0 never uses the polled ring, =1 always does.
 *
 * Before the event loop sleeps with requests in flight, the plain ring may
 * watch its completion queue for a moment (see on_prepare in
 * native/host_ring.c): where the JS thread's sleep and wake-up are a large
 * part of a request's latency past the device, that saves them. Whether it
 * pays depends on the machine, and the ring measures it as it runs
 * (measured_wait): blocks of waits watching and blocks sleeping at once, the
 * one whose completions come closer together kept, the other tried again now and then.
 * Measured on three 2 vCPU VMs of one kind, watching made depth-1 cache=none
 * requests 30-40% faster on the first, 20% slower on the second (20,000
 * random 4 KiB reads: 1.05-1.11 s without, 1.31-1.41 s watching up to
 * 200 µs), and 15-35% faster on the third (20,000 random 4 KiB overwrites:
 * 1.31-1.47 s without, 0.91-0.96 s watching up to 100 µs). VDISK_RING_SPIN_US
 * bounds the watch (0: never watch).
 *
 * The plain ring is cooperative (IORING_SETUP_COOP_TASKRUN, see ring_init in
 * native/host_ring.c): a completion no longer interrupts the JS thread while
 * it runs or watches, which on a VM costs an exit on each vCPU. 5 alternating
 * rounds on a 2 vCPU VM (medians, cooperative against not): sequential 4 KiB
 * allocating writes at depth 1 2.19 against 2.45 s, random overwrites at
 * depth 1 1.43 against 1.68 s, random allocating writes at depth 32 2.01
 * against 2.24 s, the raw file at depth 16 1.16 against 1.34 s; random reads
 * at depth 1 1.08 against 1.07 s. VDISK_RING_COOP=0 turns it off.
 */
import { VdiskError } from '../errors.js';
import { HostRing } from './host-ring.js';

/** Requests in flight on the file from which new ones go to the polled ring. */
const POLL_DEPTH = 8;
/** Longest watch of the plain ring's completion queue (µs) unless VDISK_RING_SPIN_US says otherwise (see above). */
const SPIN_MICROS = 100;

function spinMicros(): number {
  const v = process.env['VDISK_RING_SPIN_US'];
  if (v === undefined || v === '') return SPIN_MICROS;
  const n = /^[0-9]+$/.test(v) ? Number(v) : NaN;
  if (!(n <= 10_000)) {
    throw new VdiskError('EINVAL', `VDISK_RING_SPIN_US must be a whole number of microseconds from 0 to 10000, not '${v}'`, { field: 'VDISK_RING_SPIN_US' });
  }
  return n;
}

/** An on/off knob: true for 1, false for 0, null when unset; any other value is refused. */
function onOff(name: string): boolean | null {
  const v = process.env[name];
  if (v === undefined || v === '') return null;
  if (v !== '0' && v !== '1') throw new VdiskError('EINVAL', `${name} must be 0 or 1, not '${v}'`, { field: name });
  return v === '1';
}

type PollMode = 'never' | 'always' | 'deep';

function pollMode(): PollMode {
  const on = onOff('VDISK_RING_SQPOLL');
  return on === null ? 'deep' : on ? 'always' : 'never';
}

export class RingPair {
  readonly #plain: HostRing;
  /** undefined: not opened yet; null: not available here (or not wanted). */
  #polled: HostRing | null | undefined;
  readonly #mode: PollMode;

  private constructor(plain: HostRing, mode: PollMode) {
    this.#plain = plain;
    this.#mode = mode;
    this.#polled = mode === 'never' ? null : undefined;
  }

  /** Null where there is no ring at all (see HostRing.open). */
  static open(): RingPair | null {
    const plain = HostRing.open({ spinMicros: spinMicros(), cooperative: onOff('VDISK_RING_COOP') ?? true });
    return plain === null ? null : new RingPair(plain, pollMode());
  }

  /** Whether the plain ring is cooperative (for tests; see the top of this file). */
  get cooperative(): boolean {
    return this.#plain.waits()?.cooperative ?? false;
  }

  /** True once the polled ring was opened (for tests). */
  get polledOpen(): boolean {
    return this.#polled !== undefined && this.#polled !== null;
  }

  read(fd: number, buf: Uint8Array, offset: number): Promise<number> {
    return this.#pick().read(fd, buf, offset);
  }

  write(fd: number, buf: Uint8Array, offset: number): Promise<number> {
    return this.#pick().write(fd, buf, offset);
  }

  /** fdatasync covers every completed write to the file, whichever ring carried it. */
  datasync(fd: number): Promise<void> {
    return this.#plain.datasync(fd);
  }

  async close(): Promise<void> {
    await Promise.all([this.#plain.close(), this.#polled?.close()]);
  }

  #pick(): HostRing {
    if (this.#polled === null) return this.#plain;
    const polled = this.#polled;
    const depth = this.#plain.inFlight + (polled?.inFlight ?? 0);
    if (this.#mode === 'deep' && depth < POLL_DEPTH) return this.#plain;
    if (polled !== undefined) return polled;
    this.#polled = HostRing.open({ polled: true });
    return this.#polled ?? this.#plain;
  }
}
