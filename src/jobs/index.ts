export { Job, JobCancelledError, type JobEvent, type JobInfo, type JobListener, type JobOptions, type JobType, type BlockJobEventData } from './job.js';
export { JOB_STATUSES, JOB_VERBS, STATUS_TRANSITIONS, VERB_ALLOWED_IN, canTransition, verbAllowed, type JobStatus, type JobVerb } from './status.js';
export { RateLimit } from './rate-limit.js';
export { BlockCopyJob, errorAction, ON_ERROR_VALUES, type BlockJobOptions, type OnError } from './block-job.js';
export { CommitJob, imagesAbove, type CommitOptions, type PivotFn } from './commit.js';
export { StreamJob, type StreamOptions } from './stream.js';
export { MirrorJob, defaultGranularity, DEFAULT_BUF_SIZE, type MirrorOptions, type MirrorSync, type CopyMode } from './mirror.js';
export { COPY_CHUNK, CopyError } from './copy.js';
export { createPloopMerge, PloopBackwardMerge, PloopForwardMerge, type PloopMergeOptions, type PloopMergeDirection } from './ploop-merge.js';
