export { Job, JobCancelledError, type JobEvent, type JobInfo, type JobListener, type JobOptions, type JobType, type BlockJobEventData } from './job.js';
export { JOB_STATUSES, JOB_VERBS, STATUS_TRANSITIONS, VERB_ALLOWED_IN, canTransition, verbAllowed, type JobStatus, type JobVerb } from './status.js';
export { RateLimit } from './rate-limit.js';
