"""The worker's writes that end a job in Redis: ARQ's end, the give-back of a hand-over, a dropped id.

ARQ's ``finish_job`` sends each job's end (its result, the deletion of its keys, its removal from
the queue) in a MULTI/EXEC of its own. The worker (``services.queue.slots``) instead puts the ends
of the jobs that finish while one is being sent together into the next batch
(``services.core.batching``), and :func:`finish_many` sends a batch in one Lua script: the same
commands, one round trip for all of them.

Every write here is fenced by the claim's token (``services.queue.fencing``): it is done only while
the job's ``arq:in-progress:<id>`` key holds the token of the claim that wrote it ('' for none:
unconditional, as ARQ's), so a worker whose claim was superseded changes nothing.

Anyone who can write to Redis can leave a key of the wrong type where these scripts write (the
queue or the abort set): each command that meets one fails alone, and the rest is done.
"""

from __future__ import annotations

from dataclasses import dataclass

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms, to_ms
from redis.asyncio import Redis

from services.queue.enqueue import RETRY_KEY_TTL_SECONDS, Script, wake_channel

# ARQ's finish_job (arq 0.28) for each job in turn, while the job's in-progress key holds the
# claim's token ('' for none: unconditional, as ARQ's). ARGV: the queue, the abort set, the
# in-progress, result, retry and job key prefixes, then per job: id, token, '1' if finished, result
# ('' for none), the result's expiry (ms, '' for none), the score to add for a retry (''), how long
# to keep the in-progress key (ms, '' to delete it). Returns per job 1 if ended, 0 if fenced: the key
# is gone or another claim's (or not a string), and nothing was written; then the errors of the
# commands that met a key of the wrong type (the queue or the abort set): each fails alone, the rest
# is done. A retry's score is added only to a job still in the queue (ZINCRBY would add a missing one).
_FINISH = Script(b"""
local ended = {}
local errors = {}
local function try(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err ~= nil then
    errors[#errors + 1] = reply.err
    return false
  end
  return reply
end
for i = 7, #ARGV, 7 do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  if ARGV[i + 1] ~= '' and redis.pcall('GET', key) ~= ARGV[i + 1] then
    ended[#ended + 1] = 0
  else
    if ARGV[i + 6] == '' then
      redis.call('DEL', key)
    else
      redis.call('PEXPIRE', key, ARGV[i + 6])
    end
    if ARGV[i + 2] == '1' then
      if ARGV[i + 3] ~= '' then
        if ARGV[i + 4] == '' then
          redis.call('SET', ARGV[4] .. id, ARGV[i + 3])
        else
          redis.call('SET', ARGV[4] .. id, ARGV[i + 3], 'PX', ARGV[i + 4])
        end
      end
      redis.call('DEL', ARGV[5] .. id, ARGV[6] .. id)
      try('ZREM', ARGV[2], id)
      try('ZREM', ARGV[1], id)
    elseif ARGV[i + 5] ~= '' and try('ZSCORE', ARGV[1], id) then
      try('ZINCRBY', ARGV[1], ARGV[i + 5], id)
    end
    ended[#ended + 1] = 1
  end
end
return {ended, errors}
""")

# Undo a hand-over (services.queue.handoff) while the job's in-progress key holds its token.
# KEYS[1]: the in-progress key, KEYS[2]: the retry key, KEYS[3]: the abort set. ARGV: the token,
# the try count before the hand-over ('0': none), the retry key's TTL (s), '1' to put the job back
# on the abort set, now (ms), the job's id, the wake channel. Returns 1 if given back, 0 if fenced.
_GIVE_BACK = Script(b"""
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
if ARGV[4] == '1' then
  redis.pcall('ZADD', KEYS[3], ARGV[5], ARGV[6])  -- an abort set of the wrong type: the job is given back all the same
end
redis.call('PUBLISH', ARGV[7], 1)
return 1
""")


@dataclass(frozen=True)
class End:
    """The arguments of ARQ's ``Worker.finish_job`` for one job, and its claim's token."""

    job_id: str
    finish: bool
    result_data: bytes | None
    result_timeout_s: float | None
    keep_result_forever: bool
    incr_score: int | None
    keep_in_progress: float | None
    token: str | None


async def finish_many(redis: Redis, *, queue_name: str, ends: list[End]) -> tuple[list[bool], list[str]]:
    """Write the ends of jobs of ``queue_name`` in one script; per end True if written, False if fenced.

    Also returns the errors of the commands that met a key of the wrong type (the queue or the
    abort set), each once: those commands failed alone, the rest is done.
    """
    # The commands of ARQ's finish_job (arq 0.28), for each job in turn, in one script (_FINISH).
    args: list[str | bytes | int] = [queue_name, abort_jobs_ss, in_progress_key_prefix, result_key_prefix]
    args += [retry_key_prefix, job_key_prefix]
    for end in ends:
        expire = None if end.keep_result_forever else end.result_timeout_s
        args += [
            end.job_id,
            end.token or "",
            int(end.finish),
            end.result_data if end.finish and end.result_data else b"",
            "" if expire is None else to_ms(expire) or "",
            end.incr_score or "",
            "" if end.keep_in_progress is None else to_ms(end.keep_in_progress) or 0,
        ]
    ended, errors = await _FINISH(redis, [], args)
    return [bool(flag) for flag in ended], sorted({raw.decode(errors="replace") for raw in errors})


async def give_back(redis: Redis, *, queue_name: str, job_id: str, token: str, job_try: int, abort: bool) -> bool:
    """Undo what the enqueue did to hand ``job_id`` over (try ``job_try``, claimed with ``token``).

    The job waits in the queue for a claim again, and the workers are woken. False if fenced: the
    hand-over's short hold ran out and another claim holds the job.
    """
    keys = [in_progress_key_prefix + job_id, retry_key_prefix + job_id, abort_jobs_ss]
    args: list[str | int] = [token, job_try - 1, RETRY_KEY_TTL_SECONDS]
    args += [int(abort), timestamp_ms(), job_id, wake_channel(queue_name)]
    return bool(await _GIVE_BACK(redis, keys, args))


async def drop(redis: Redis, *, queue_name: str, raw_id: bytes) -> None:
    """Remove an id that is not UTF-8 (no job of ours has one) from the queue and the abort set, with its keys."""
    keys = [prefix.encode() + raw_id for prefix in (in_progress_key_prefix, retry_key_prefix, job_key_prefix)]
    async with redis.pipeline(transaction=True) as tr:
        tr.zrem(queue_name, raw_id)
        tr.zrem(abort_jobs_ss, raw_id)
        tr.delete(*keys)
        await tr.execute(raise_on_error=False)  # an abort set of the wrong type: the rest is done
