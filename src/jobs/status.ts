/**
 * The job state machine as data: which status may follow which, and which verb
 * is legal in which status. Same tables as QEMU's job.c (JobSTT, JobVerbTable;
 * `complete` allowed in standby as since QEMU 6.0), so QMP users see the same
 * errors for the same misuse.
 */
export const JOB_STATUSES = [
  'undefined',
  'created',
  'running',
  'paused',
  'ready',
  'standby',
  'waiting',
  'pending',
  'aborting',
  'concluded',
  'null',
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const JOB_VERBS = ['cancel', 'pause', 'resume', 'set-speed', 'complete', 'finalize', 'dismiss', 'change'] as const;
export type JobVerb = (typeof JOB_VERBS)[number];

/** status → the statuses it may move to. */
export const STATUS_TRANSITIONS: Readonly<Record<JobStatus, readonly JobStatus[]>> = {
  undefined: ['created'],
  created: ['running', 'aborting', 'null'],
  running: ['paused', 'ready', 'waiting', 'aborting'],
  paused: ['running'],
  ready: ['standby', 'waiting', 'aborting'],
  standby: ['ready'],
  waiting: ['pending', 'aborting'],
  pending: ['aborting', 'concluded'],
  aborting: ['aborting', 'concluded'],
  concluded: ['null'],
  null: [],
};

/** verb → the statuses in which it is accepted. */
export const VERB_ALLOWED_IN: Readonly<Record<JobVerb, readonly JobStatus[]>> = {
  cancel: ['created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending'],
  pause: ['created', 'running', 'paused', 'ready', 'standby'],
  resume: ['created', 'running', 'paused', 'ready', 'standby'],
  'set-speed': ['created', 'running', 'paused', 'ready', 'standby'],
  complete: ['ready', 'standby'],
  finalize: ['pending'],
  dismiss: ['concluded'],
  change: ['created', 'running', 'paused', 'ready', 'standby'],
};

export function canTransition(from: JobStatus, to: JobStatus): boolean {
  return STATUS_TRANSITIONS[from].includes(to);
}

export function verbAllowed(verb: JobVerb, status: JobStatus): boolean {
  return VERB_ALLOWED_IN[verb].includes(status);
}
