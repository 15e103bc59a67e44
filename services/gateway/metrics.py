"""The gateway's Prometheus metrics (gRPC request metrics come from services.common.infra.grpc_server)."""
from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter("likeness_jobs_total", "Finished jobs by final status.", ["status"])
QUEUE_DEPTH = Gauge("likeness_job_queue_depth", "Jobs waiting for a worker.")
IN_FLIGHT = Gauge("likeness_jobs_in_flight", "Jobs running now.")
STAGE_SECONDS = Histogram("likeness_stage_duration_seconds", "Seconds per pipeline stage of a job.", ["stage"],
                          buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640))
WEBHOOKS = Counter("likeness_webhook_attempts_total", "Webhook POSTs by outcome (delivered, retried, failed).",
                   ["outcome"])
STREAMS_IN_FLIGHT = Gauge("likeness_streams_in_flight", "Live videos running now, by kind (stream: StreamVideo; "
                          "live_audio, live_text: LiveVideo).", ["kind"])
STREAMS = Counter("likeness_streams_total", "Finished live videos by kind and outcome (ok, invalid, failed, "
                  "cancelled: the caller went away, refused: no free place).", ["kind", "outcome"])
FIRST_MEDIA = Histogram("likeness_stream_first_media_seconds", "Seconds from a live video's call to its first "
                        "video bytes, by kind.", ["kind"], buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
LIVE_IDLE = Counter("likeness_live_idle_seconds_total", "Seconds of resting silence live videos from text "
                    "added while the caller's text was late (an LLM thinking).")
LIVE_INTERRUPTS = Counter("likeness_live_interrupts_total", "Interrupts of live videos from text (the user "
                          "spoke over the avatar).")
