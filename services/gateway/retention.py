"""Deleting personal data: a finished job and all it stored, an upload and what was made from it alone,
on request (DeleteJob, DeleteAsset) and once older than LIKENESS_RETENTION_DAYS (the sweeper).

An upload's age counts from its latest UploadAsset (uploading the same bytes again renews it); with API
keys on, each principal's claim (asset-owners/<id>/<principal>) ages on its own and the bytes go with
the last claim. Nothing a queued or running job or a live stream reads is deleted; a job whose webhook
is still being delivered is kept until the delivery ends.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from services.common.domain.errors import NotFound
from services.common.infra.storage import Storage
from services.gateway import assets, webhooks
from services.gateway.db import Database
from services.gateway.jobs import Job, JobActive, JobManager

log = logging.getLogger(__name__)
DAY_S = 86400.0


class InUse(Exception):
    """A queued or running job (or a live stream) still reads the asset."""


class Eraser:
    def __init__(self, storage: Storage, manager: JobManager, streaming: Callable[[], list[dict]]) -> None:
        self.storage = storage
        self.manager = manager
        self.streaming = streaming  # the live streams' requests

    def delete_job(self, job: Job) -> list[str]:
        """Its outputs first, its row last: a failure half-way leaves a job that can be deleted again.
        JobActive while it is queued or running."""
        if not job.state.terminal:
            raise JobActive(f"job {job.job_id} is {job.state.value.lower()}: cancel it first")
        keys = self.storage.list(f"jobs/{job.job_id}/")
        for key in keys:
            self.storage.delete(key)
        try:
            self.manager.forget(job.job_id)
        except KeyError:  # deleted by a concurrent call
            pass
        return keys

    def users(self, key: str, viewer: str | None = None) -> list[str]:
        """What still reads the asset `key`; another principal's job is not named to `viewer`."""
        found = [f"job {job.job_id}" if viewer in (None, job.owner) else "another principal's job"
                 for job in self.manager.active() if key in job.request.stored_keys()]
        return found + ["a live stream" for request in self.streaming() if key in request.stored_keys()]

    def delete_asset(self, asset_id: str, principal: str | None = None) -> list[str]:
        """Unscoped (principal None): the upload and what only it made. Scoped: the principal's claim,
        and the rest with the last claim. NotFound, or InUse while something reads it."""
        key = assets.asset_key(asset_id)
        claim: list[str] = []
        if principal is not None:
            claim = [assets.owner_key(asset_id, principal)]
            if not self.storage.exists(claim[0]):
                raise NotFound(f"no asset {asset_id!r}")
            if len(self.storage.list(assets.owner_key(asset_id, ""))) > 1:
                self.storage.delete(claim[0])
                return claim
        users = self.users(key, principal)
        if users:
            raise InUse(f"{users[0]} uses this asset and has not finished: cancel it first")
        # What only this asset made: a photo's rigs (they hold the image), a voice sample's profiles;
        # unscoped (keys off, or an operator), every principal's claim goes with it.
        derived = self.storage.list(f"rigs/{asset_id}-") + self.storage.list(f"voices/{asset_id}.")
        if principal is None:
            claim = self.storage.list(assets.owner_key(asset_id, ""))
        keys = ([key] if self.storage.exists(key) else []) + derived + claim
        if not keys:
            raise NotFound(f"no asset {asset_id!r}")
        for stored in keys:
            self.storage.delete(stored)
        return keys

    def sweep(self, max_age_s: float, now: float | None = None) -> list[str]:
        """Deletes what is older than max_age_s; returns the deleted keys."""
        cutoff = (time.time() if now is None else now) - max_age_s
        deleted: list[str] = []
        for job in self.manager.list(page_size=1 << 30, created_before=cutoff)[0]:  # every replica's
            pending = job.webhook.get("state", webhooks.PENDING) == webhooks.PENDING and job.request.webhook_url
            if job.state.terminal and job.updated_at < cutoff and not pending:
                deleted += self.delete_job(job)
        claims: dict[str, list[tuple[str, float]]] = {}
        for key, modified in self.storage.list_with_times("asset-owners/"):
            claims.setdefault(key.split("/")[1], []).append((key.rsplit("/", 1)[1], modified))
        for key, modified in self.storage.list_with_times("assets/"):
            asset_id = key.removeprefix("assets/")
            if not assets.ASSET_ID.match(asset_id):
                continue
            try:
                if asset_id not in claims:
                    if modified < cutoff:
                        deleted += self.delete_asset(asset_id)
                    continue
                for principal, claimed in claims[asset_id]:
                    if claimed < cutoff:
                        deleted += self.delete_asset(asset_id, principal)
            except InUse:
                continue  # once its jobs finish
        return deleted


def start_sweeper(eraser: Eraser, retention_days: float) -> threading.Thread | None:
    """Sweeps every tenth of the retention period (1 s .. 10 min) in a daemon thread; None when 0.
    With several replicas on one database, one of them sweeps each period: the one whose UPDATE of
    periodic_runs moves the last run forward."""
    if retention_days <= 0:
        return None
    max_age_s = retention_days * DAY_S
    interval_s = min(600.0, max(1.0, max_age_s / 10))

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            try:
                if not claim_period(eraser.manager.db, "retention", interval_s):
                    continue
                deleted = eraser.sweep(max_age_s)
                if deleted:
                    log.info("retention: deleted %d objects older than %g days", len(deleted), retention_days)
            except Exception:  # storage or database briefly unreachable: try again next round
                log.exception("retention sweep failed")

    thread = threading.Thread(target=loop, name="retention", daemon=True)
    thread.start()
    return thread


def claim_period(db: Database, name: str, interval_s: float) -> bool:
    """True for the one caller per `interval_s` (across replicas) that should do the work `name`."""
    with db.connect() as conn:
        conn.execute("INSERT INTO periodic_runs (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
        return conn.execute("UPDATE periodic_runs SET last_run = now() WHERE name = %s AND "
                            "last_run <= now() - make_interval(secs => %s) RETURNING name",
                            (name, interval_s * 0.9)).fetchone() is not None
