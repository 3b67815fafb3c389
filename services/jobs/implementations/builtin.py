"""The job implementations: thin wrappers that hand the payload to the code doing the work.

Every side effect is keyed on the job id and recorded in ``job_effects``, so a run repeated after
a crash does not send the email or write the line again. Before each effect the job checks that it
still holds its lease (``services.queue.fencing``): a run whose worker was paused or cut off past
its lease, and whose job another worker took over, does nothing more.
"""

from __future__ import annotations

import asyncio

from services import ledger
from services.contract import CleanupTempFiles, JobName, SendEmail, UpdateUser, WriteLog
from services.jobs.context import JobContext
from services.jobs.effects.temp_cleaner import remove_old_files
from services.jobs.execution import JobResult
from services.jobs.loading import implements


async def _done_before(ctx: JobContext, effect: str) -> bool:
    """True when an earlier attempt of this job did ``effect``.

    A job's first attempt (``attempt == 1``) has no earlier one, so the ledger is not asked.
    """
    if ctx["attempt"] == 1:
        return False
    return await ledger.effect_done(ctx["db"], job_id=ctx["job_id"], effect=effect)


@implements(JobName.send_email)
async def send_email(ctx: JobContext, payload: SendEmail) -> JobResult:
    """Send the email once, then (for a welcome email) stamp the user's row."""
    job_id = ctx["job_id"]
    message = ctx["mailer"].build(job_id=job_id, to=payload.to, subject=payload.subject, body=payload.body)
    sent = not await _done_before(ctx, "email")
    if sent:
        await ctx["leases"].check(job_id)
        await ctx["mailer"].send(message)
        detail = {"to": payload.to, "message_id": message["Message-ID"]}
        if payload.mark_welcome_sent:  # more work follows: the email is recorded before it
            await ctx["attempts"].record_effect(job_id=job_id, effect="email", detail=detail, attempt=ctx["attempt"])
        else:  # the last step: recorded with the attempt's end, in its commit
            ctx["attempts"].note_effect(job_id=job_id, effect="email", detail=detail)
    if payload.mark_welcome_sent:
        await ctx["leases"].check(job_id)
        await ctx["users"].mark_welcome_sent(email=payload.to)
    return {"to": payload.to, "message_id": message["Message-ID"], "sent_now": sent}


@implements(JobName.write_log)
async def write_log(ctx: JobContext, payload: WriteLog) -> JobResult:
    """Append the message's line to the log file, once."""
    job_id = ctx["job_id"]
    if await _done_before(ctx, "log_line"):
        return {"file": str(ctx["log_writer"].path), "written_now": False}
    await ctx["leases"].check(job_id)
    line, written = await ctx["log_writer"].write(job_id=job_id, message=payload.message, rerun=ctx["attempt"] > 1)
    ctx["attempts"].note_effect(job_id=job_id, effect="log_line", detail={"line": line})  # with the end
    return {"file": str(ctx["log_writer"].path), "written_now": written}


@implements(JobName.update_user)
async def update_user(ctx: JobContext, payload: UpdateUser) -> JobResult:
    """Create or update the user row (a guarded upsert: a re-run changes nothing)."""
    await ctx["leases"].check(ctx["job_id"])
    changed = await ctx["users"].upsert(email=payload.email, name=payload.name)
    return {"email": payload.email.lower(), "changed": changed}


@implements(JobName.cleanup_temp_files)
async def cleanup_temp_files(ctx: JobContext, payload: CleanupTempFiles) -> JobResult:
    """Remove files older than the configured age from the configured temp directory."""
    settings = ctx["settings"]
    job_id, leases = ctx["job_id"], ctx.get("leases")
    # A scheduled run (no ledger row) is fenced only when our claim leased it: ARQ's own poll does not.
    if leases is not None and (leases.token(job_id) is not None or leases.lost(job_id)):
        await leases.check(job_id)
    removed = await asyncio.to_thread(
        remove_old_files, settings.temp_dir, max_age_seconds=settings.temp_max_age_seconds
    )
    return {"directory": str(settings.temp_dir), "removed": len(removed)}
