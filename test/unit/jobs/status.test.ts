import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JOB_STATUSES, JOB_VERBS, STATUS_TRANSITIONS, VERB_ALLOWED_IN, canTransition, verbAllowed } from '../../../src/jobs/status.js';

// QEMU job.c's tables, columns U C R P Y S W D X E N, transcribed as bit rows so
// that a change to ours shows up as a diff against the reference.
const STT: Record<string, string> = {
  undefined: '01000000000',
  created: '00100000101',
  running: '00011010100',
  paused: '00100000000',
  ready: '00000110100',
  standby: '00001000000',
  waiting: '00000001100',
  pending: '00000000110',
  aborting: '00000000110',
  concluded: '00000000001',
  null: '00000000000',
};
const VERBS: Record<string, string> = {
  cancel: '01111111000',
  pause: '01111100000',
  resume: '01111100000',
  'set-speed': '01111100000',
  complete: '00001100000',
  finalize: '00000001000',
  dismiss: '00000000010',
  change: '01111100000',
};

test('status transitions equal QEMU JobSTT', () => {
  for (const from of JOB_STATUSES) {
    const row = JOB_STATUSES.map((to) => (canTransition(from, to) ? '1' : '0')).join('');
    assert.equal(row, STT[from], `transitions from ${from}`);
  }
});

test('verb table equals QEMU JobVerbTable', () => {
  for (const verb of JOB_VERBS) {
    const row = JOB_STATUSES.map((s) => (verbAllowed(verb, s) ? '1' : '0')).join('');
    assert.equal(row, VERBS[verb], `verb ${verb}`);
  }
});

test('tables name only known statuses', () => {
  for (const list of [...Object.values(STATUS_TRANSITIONS), ...Object.values(VERB_ALLOWED_IN)]) {
    for (const s of list) assert.ok((JOB_STATUSES as readonly string[]).includes(s));
  }
});
