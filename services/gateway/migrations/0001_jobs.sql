-- Jobs: the system of record shared by every gateway replica (object storage keeps only blobs).
CREATE TABLE jobs (
    job_id            text PRIMARY KEY,
    owner             text NOT NULL DEFAULT '',
    client_request_id text NOT NULL DEFAULT '',
    state             text NOT NULL CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    stage             text NOT NULL DEFAULT '',
    progress          real NOT NULL DEFAULT 0,
    message           text NOT NULL DEFAULT '',
    error_code        text NOT NULL DEFAULT '',
    error_field       text NOT NULL DEFAULT '',
    holder            text NOT NULL DEFAULT '',       -- the replica running it (RUNNING only)
    lease_until       timestamptz,                     -- its holder renews this; past it, another takes over
    attempts          integer NOT NULL DEFAULT 0,
    cancel_requested  boolean NOT NULL DEFAULT false,
    request           jsonb NOT NULL,
    stage_outputs     jsonb NOT NULL DEFAULT '{}',
    result            jsonb NOT NULL DEFAULT '{}',
    warnings          jsonb NOT NULL DEFAULT '[]',
    webhook           jsonb NOT NULL DEFAULT '{}',     -- delivery state, as GetJob shows it
    retry_of          text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A retried submission (same principal, same client_request_id) finds its job, whichever replica it reaches.
CREATE UNIQUE INDEX jobs_client_request ON jobs (owner, client_request_id) WHERE client_request_id <> '';
-- ListJobs, newest first, everyone's or one principal's.
CREATE INDEX jobs_created ON jobs (created_at DESC, job_id DESC);
CREATE INDEX jobs_owner_created ON jobs (owner, created_at DESC, job_id DESC);
-- Claims, admission counts and the queue-depth metric read only unfinished jobs.
CREATE INDEX jobs_unfinished ON jobs (state, created_at) WHERE state IN ('QUEUED', 'RUNNING');

-- Webhooks still to deliver: written in the same transaction that finishes the job (a transactional
-- outbox), claimed by one replica's dispatcher at a time (FOR UPDATE SKIP LOCKED + a claim lease).
CREATE TABLE webhook_outbox (
    job_id        text PRIMARY KEY REFERENCES jobs ON DELETE CASCADE,
    due_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_by    text NOT NULL DEFAULT '',
    claimed_until timestamptz
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (due_at);

-- Work one replica does per period (the retention sweep): the replica whose UPDATE moves last_run runs it.
CREATE TABLE periodic_runs (
    name     text PRIMARY KEY,
    last_run timestamptz NOT NULL DEFAULT 'epoch'
);

-- Every change of a job wakes its watchers and the replica running it, on every replica (LISTEN).
CREATE FUNCTION likeness_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row jobs;
BEGIN
    row := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    PERFORM pg_notify('likeness_jobs', row.job_id || ' ' ||
                      CASE WHEN TG_OP = 'DELETE' THEN 'DELETED' ELSE row.state END || ' ' ||
                      CASE WHEN row.cancel_requested THEN '1' ELSE '0' END);
    IF TG_OP <> 'DELETE' AND row.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
            AND (TG_OP = 'INSERT' OR OLD.state IN ('QUEUED', 'RUNNING'))
            AND coalesce(row.request ->> 'webhook_url', '') <> '' THEN
        INSERT INTO webhook_outbox (job_id) VALUES (row.job_id) ON CONFLICT DO NOTHING;
        PERFORM pg_notify('likeness_webhooks', row.job_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE OR DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION likeness_job_changed();
