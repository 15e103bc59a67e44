"""The gateway's Prometheus metrics (gRPC request metrics come from services.common.grpc_server)."""
from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter("likeness_jobs_total", "Finished jobs by final status.", ["status"])
QUEUE_DEPTH = Gauge("likeness_job_queue_depth", "Jobs waiting for a worker.")
IN_FLIGHT = Gauge("likeness_jobs_in_flight", "Jobs running now.")
STAGE_SECONDS = Histogram("likeness_stage_duration_seconds", "Seconds per pipeline stage of a job.", ["stage"],
                          buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640))
WEBHOOKS = Counter("likeness_webhook_attempts_total", "Webhook POSTs by outcome (delivered, retried, failed).",
                   ["outcome"])
