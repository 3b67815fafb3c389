"""The worker's claim: one Lua script that takes due jobs off the queue for its free slots.

The script reads the due job ids and claims as many as there is room for, setting ARQ's
``arq:in-progress:<id>`` key on each as ARQ's WATCH/MULTI does (a job running elsewhere is
skipped) with the claim's token as its value (``<worker id>:<ARQ try>``, which fences the
worker's later writes: ``services.queue.fencing``), and does for each the commands ARQ's
``run_job`` starts with: read the job, count the try, take it off the abort set. It also
withdraws the worker's registration for hand-overs and makes a new one
(``services.queue.handoff``), and returns the score of the next deferred job.

Anyone who can write to Redis can leave a value of the wrong type where the script looks. Only
the queue itself being unreadable stops the script, before it writes anything (it is read first);
the rest is taken with ``redis.pcall`` and reported in :class:`Claim`, so that the worker logs it
and goes on with what it can do:

* a job key that is not a string: the job is claimed with no data and flagged ``unreadable``
  (the runner fails it and ARQ's end removes its keys);
* a try counter that is not a number: counted afresh from 1, and flagged;
* an abort set that is not a sorted set: no job is taken as aborted (``abort_set_broken``);
* an idle set that is not a sorted set: the registration is given up, none is made
  (``idle_set_broken``): the worker claims its jobs itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from services.queue.enqueue import Script

UNREADABLE_JOB = 1
"""Flag of a claimed job whose job key holds another type than a string."""
TRY_RECOUNTED = 2
"""Flag of a claimed job whose try counter held no number and was counted afresh."""

# KEYS[1]: the queue. ARGV: now (ms), how many jobs to claim at most, the in-progress key's TTL
# (ms), how many ids to read, the in-progress key prefix, the job key prefix, the retry key prefix,
# the retry key's TTL (s), the abort set ('' when aborts are off), the idle workers' set, the
# registration to withdraw (''), the registration to make if room remains (''), the claim's token
# prefix (the in-progress key holds it followed by the try: services.queue.fencing). Returns, for each
# claimed job, its id, score, data (nil if expired or unreadable), try number, whether it was to
# be aborted (ARQ's run_job reads these three first) and its flags; the score of the earliest job
# not yet due (or nil); 1 if a due job that nobody runs was left for lack of room; 1 if the
# registration was withdrawn (0: a hand-over took it); 1 if the new registration was made; 1 if the
# idle set, 1 if the abort set could not be used.
_SOURCE = b"""
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end
local claimed = {}
local room = tonumber(ARGV[2])
local left = 0
local withdrawn = 0
local idle_broken = 0
local abort_broken = 0
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
if ARGV[11] ~= '' then
  withdrawn = redis.pcall('ZREM', ARGV[10], ARGV[11])
  if failed(withdrawn) then
    withdrawn = 1  -- nothing can take a registration from a set that is not one
    idle_broken = 1
  end
  room = room + withdrawn
end
for i = 1, #due, 2 do
  local id = due[i]
  local key = ARGV[5] .. id
  if redis.call('EXISTS', key) == 0 then
    if room <= 0 then
      left = 1
      break
    end
    local flags = 0
    local retry_key = ARGV[7] .. id
    local try = redis.pcall('INCR', retry_key)
    if failed(try) then
      redis.call('DEL', retry_key)
      try = redis.call('INCR', retry_key)
      flags = flags + 2
    end
    redis.call('PSETEX', key, ARGV[3], ARGV[13] .. try)
    redis.call('EXPIRE', retry_key, ARGV[8])
    local abort = 0
    if ARGV[9] ~= '' and abort_broken == 0 then
      abort = redis.pcall('ZREM', ARGV[9], id)
      if failed(abort) then
        abort = 0
        abort_broken = 1
      end
    end
    local data = redis.pcall('GET', ARGV[6] .. id)
    if failed(data) then
      data = false
      flags = flags + 1
    end
    local n = #claimed
    claimed[n + 1] = id
    claimed[n + 2] = due[i + 1]
    claimed[n + 3] = data
    claimed[n + 4] = try
    claimed[n + 5] = abort
    claimed[n + 6] = flags
    room = room - 1
  end
end
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local registered = 0
if ARGV[12] ~= '' and room > 0 and idle_broken == 0 then
  local made = redis.pcall('ZADD', ARGV[10], ARGV[1], ARGV[12])
  if failed(made) then
    idle_broken = 1
  else
    registered = 1
  end
end
return {claimed, later[2] or false, left, withdrawn, registered, idle_broken, abort_broken}
"""
SCRIPT = Script(_SOURCE)


@dataclass(frozen=True)
class ClaimedJob:
    """One job the claim took: what ARQ's ``run_job`` reads first, and the flags of what was unreadable."""

    raw_id: bytes
    score: int
    data: bytes | None
    job_try: int
    abort: bool
    flags: int


@dataclass(frozen=True)
class Claim:
    """The claim script's answer."""

    jobs: list[ClaimedJob]
    next_due_ms: int | None
    """The score of the earliest job not yet due."""
    left: bool
    """A due job that nobody runs was left for lack of room."""
    withdrawn: bool
    registered: bool
    idle_set_broken: bool
    abort_set_broken: bool

    @classmethod
    def of(cls, reply: list[Any]) -> Claim:
        """Read the script's reply."""
        claimed, later, left, withdrawn, registered, idle_broken, abort_broken = reply
        jobs = [
            ClaimedJob(
                raw_id=claimed[i],
                score=score_ms(claimed[i + 1]),
                data=claimed[i + 2],
                job_try=int(claimed[i + 3]),
                abort=bool(claimed[i + 4]),
                flags=int(claimed[i + 5]),
            )
            for i in range(0, len(claimed), 6)
        ]
        return cls(
            jobs=jobs,
            next_due_ms=None if later is None else score_ms(later),
            left=bool(left),
            withdrawn=bool(withdrawn),
            registered=bool(registered),
            idle_set_broken=bool(idle_broken),
            abort_set_broken=bool(abort_broken),
        )


def score_ms(raw: bytes | str) -> int:
    """A queue score in ms; one that is infinite (ZADD takes ``-inf``) counts as due since the epoch."""
    score = float(raw)
    return int(score) if math.isfinite(score) else 0
