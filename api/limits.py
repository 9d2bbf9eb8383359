"""Sizes and intervals the API enforces, in one place."""

from fractal.images import MAX_IMAGE_BYTES

# A body holds at most one image, base64-encoded (4/3), plus a little JSON or form framing.
MAX_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 1024 * 1024
MAX_FORM_FIELDS = 64
RESULT_POLL_SECONDS = 0.003  # POST /generate looks at the job row this often near the end ...
RESULT_POLL_MID_RENDER_SECONDS = 0.025  # ... this often while the render is mid-way ...
RESULT_POLL_FAST_SECONDS = 2.0  # ... for this long, ...
RESULT_POLL_MAX_SECONDS = 0.1  # ... then backs off to this for long renders, to spare the DB
# With workers' finish signals, looks are only a fallback for a lost signal. Rare: each look
# while a render runs takes a core from it (its threads use them all on a small machine).
RESULT_POLL_SIGNALLED_SECONDS = 1.0
# GET /jobs/{id}/events reads a job's row when a worker signals its start, progress or end;
# this often otherwise, in case a signal was lost (Redis reconnecting, a dropped datagram).
EVENTS_FALLBACK_SECONDS = 2.0
# ... and this often while it is queued: then only a claim (signalled, and followed by
# progress signals that would catch a lost one up) or a cancel moves it, and streams on
# queued jobs are the many (a key's whole backlog), so their looks are what add up.
EVENTS_QUEUED_FALLBACK_SECONDS = 10.0
EVENTS_MIN_GAP_SECONDS = 0.05  # signals closer than this make one read
EVENTS_PING_SECONDS = 15
# A stream whose client reads nothing (its socket buffers full) is cut off after this long.
EVENTS_SEND_TIMEOUT_SECONDS = 30
STREAM_RETRY_AFTER = 5  # seconds, for 429s when a key has max_streams_per_key open streams
QUEUE_FULL_RETRY_AFTER = 30  # seconds, for 503s when max_queued_jobs is reached
QUOTA_RETRY_AFTER = 5  # seconds, for 429s when a key has max_jobs_per_key unfinished jobs
BATCH_RESULTS_CHUNK = 500  # job rows read per query while streaming a batch's results
WORKER_WATCH_SECONDS = 1.0  # how often the embedded server checks its worker is alive
MAX_HEADER_BYTES = 64 * 1024  # a request's line and headers; more gets 431 (h11: 400)
