"""The ARQ internals the queue relies on, pinned to the ARQ they were read in (``arq==0.28.0``).

The queue subclasses ARQ's worker, replaces parts of it, and reads and writes ARQ's keys from its
own Lua scripts. None of that is ARQ's public API: a new ARQ may change any of it without a word.
Each internal is listed below (paths relative to ``services/queue/``), with where we rely on it
and why. :data:`FINGERPRINTS` holds the SHA-256 of each one's source as installed at
:data:`ARQ_VERSION` (of its value's ``repr`` for a constant: :func:`fingerprint`), and
:func:`drifted` names each one that changed or is gone, and each attribute of ARQ's
``Worker.__init__`` that our subclasses use and that it no longer sets (:data:`INIT_ATTRIBUTES`).
``tests/unit/test_arq_internals.py`` fails on any of them, and on any module outside
``services/queue/`` that imports arq. After an upgrade, re-read each internal named against the
code listed here, then update its fingerprint.

ARQ's keys, as our scripts see them (pinned by the constants and the functions that write them):
the queue, a sorted set of job ids scored by their run-at time in ms, which keeps a job while it
runs; ``arq:job:<id>``, the serialized job, expiring ``expires_extra_ms`` after its score;
``arq:in-progress:<id>``, a string ("1" from ARQ, a claim's token from us) whose existence means
"running"; ``arq:retry:<id>``, the try counter, incremented at each start, kept 88,400 s;
``arq:result:<id>``, the serialized result; ``arq:abort``, a sorted set of ids to abort scored by
when they were asked to (ms).

The worker (the subclasses ``runner.ClaimedJobRunner``, ``slots.JobSlots``, ``wake_ups.WakeUps``,
``worker.QueueWorker``):

* ``arq.worker.Worker``: subclassed (runner). A method or attribute added anywhere in it may
  collide with one of ours, or be left out by our main loop.
* ``arq.worker.Worker.__init__``: sets the state the subclasses read and change (the slots'
  ``sem`` and ``job_counter``, ``tasks``, ``job_tasks``, ``aborting_tasks``, ``allow_pick_jobs``,
  ``in_progress_timeout_s``, the ``jobs_*`` counters, ``_pool``...: :data:`INIT_ATTRIBUTES`);
  worker's claim takes ``sem`` without waiting, counting on a permit for each of ``max_jobs``.
* ``arq.worker.Worker.run``: runs ``main``, then ``close`` however ``main`` ended (runner's
  ``close`` is written for that; ``services/jobs/__main__.py`` calls ``run``).
* ``arq.worker.Worker.main``: replaced by worker's ``main``, which repeats its lines around the
  loop it replaces (the pool, the start log lines, ``ctx["redis"]``, ``on_startup``, burst exits).
* ``arq.worker.Worker._poll_iteration``: replaced by worker's, which repeats its burst count,
  task clean-up and ``heart_beat`` around the claim.
* ``arq.worker.Worker._cancel_aborted_jobs``: replaced by worker's, a copy that copes with
  values it cannot use (the abort set's pruning copied as it is).
* ``arq.worker.Worker._release_sem_dec_counter_on_complete``: extended by worker (a freed slot
  wakes it); repeated by slots' ``_free_slot``; called by slots when a job's slot frees.
* ``arq.worker.Worker.start_jobs``: never called: claim's script does its WATCH/EXISTS/PSETEX of
  the in-progress key (TTL ``in_progress_timeout_s``), worker its slot counting, slots its task.
  leases' ``ARQ_TOKEN`` is the "1" it writes.
* ``arq.worker.Worker.run_job``: never called: claim's script (and enqueue's hand-over) does the
  MULTI it starts with (read the job, count the try, keep the counter 88,400 s: enqueue's
  ``RETRY_KEY_TTL_SECONDS``, take the job off the abort set); runner's ``_run_fetched`` is the
  rest of it, step for step.
* ``arq.worker.Worker.finish_job``: replaced by slots' (same signature; runner calls it); its
  commands are ends' ``_FINISH`` script.
* ``arq.worker.Worker.finish_failed_job``: called by runner for jobs that fail before they run.
* ``arq.worker.Worker.heart_beat``: called by worker's ``_poll_iteration`` (health check, cron).
* ``arq.worker.Worker.run_cron``: cron runs get the id ``<cron name>:<ms>``: slots'
  ``CRON_PREFIX`` tells them apart (our cron names start with ``cron:``).
* ``arq.worker.Worker._jobs_started``: called by worker in burst mode.
* ``arq.worker.Worker.handle_sig``: extended by worker (remembers the signal); called by
  runner's ``close``.
* ``arq.worker.Worker.handle_sig_wait_for_completion``: extended by worker (remembers the signal).
* ``arq.worker.Worker._wait_for_tasks_to_complete``: what SIGTERM with ``job_completion_wait``
  leads to: it cancels the jobs and the main task, and runner's ``close`` takes over.
* ``arq.worker.Worker.close``: replaced by runner's (safe for the jobs still running).
* ``arq.worker.Worker.pool``: the Redis client everywhere in the subclasses.
* ``arq.worker.Function``: runner reads its timeout, result and ``max_tries`` settings.
* ``arq.worker.func``: builds those (``services.queue.job_function``).
* ``arq.worker.Retry``: runner reads its ``defer_score`` (``services.queue.RetryLater``).
* ``arq.worker.RetryJob``, ``arq.worker.JobExecutionFailed``, ``arq.worker.no_result``: runner
  handles and stores them as ``run_job`` does.
* ``arq.worker.logger``: runner, slots, wake_ups and worker log on ARQ's own logger, by its name.

Jobs, keys and connections:

* ``arq.jobs.serialize_job``: enqueue's script writes the job it serializes.
* ``arq.jobs.serialize_result``: runner's results; inspection's ``read_result`` reads its
  ``s`` and ``r`` fields.
* ``arq.jobs.deserialize_job_raw``: runner reads jobs with it; its ``_check_fields`` checks the
  five fields it returns.
* ``arq.jobs.SerializationError``, ``arq.jobs.DeserializationError``: runner raises and handles
  them as ``run_job`` does.
* ``arq.jobs.Job.abort``: control's ``withdraw`` adds to the abort set as it does.
* ``arq.connections.ArqRedis.__init__``: the attributes it sets are those timeouts'
  ``create_redis`` sets on its pool.
* ``arq.connections.ArqRedis.enqueue_job``: enqueue's script does its commands and its dedupe
  (job or result key exists); control's ``enqueue_again`` relies on its None for a known id.
* ``arq.connections.create_pool``: called by worker's ``main``; timeouts' ``create_redis``
  repeats its client for one server, with timeouts.
* ``arq.connections.RedisSettings``: read field by field by timeouts' ``create_redis``.
* ``arq.connections.log_redis_info``: called by worker's ``main``.
* ``arq.cron.CronJob``: runner tells cron runs apart with it (``run_job`` checks ``next_run``).
* ``arq.cron.cron``: builds those (``services.queue.scheduled``).
* ``arq.constants.job_key_prefix``, ``arq.constants.in_progress_key_prefix``,
  ``arq.constants.retry_key_prefix``, ``arq.constants.result_key_prefix``,
  ``arq.constants.abort_jobs_ss``: the keys above, passed to the scripts of claim, enqueue, ends
  and leases, and read or written by control and inspection.
* ``arq.constants.abort_job_max_age``: worker's ``_cancel_aborted_jobs`` prunes with it.
* ``arq.constants.keep_cronjob_progress``: runner keeps a cron run's in-progress key that long.
* ``arq.constants.expires_extra_ms``: enqueue's job keys expire with it
  (``services.queue.JOB_KEY_LIFETIME_SECONDS``).
* ``arq.utils.timestamp_ms``, ``arq.utils.to_ms``, ``arq.utils.to_unix_ms``,
  ``arq.utils.ms_to_datetime``: ARQ's times in ms, used wherever ours meet its (claim and ends
  arguments, enqueue scores, runner's job context, inspection).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import logging
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass

ARQ_VERSION = "0.28.0"
"""The ARQ whose internals were read and fingerprinted here."""

FINGERPRINTS: Mapping[str, str] = {
    "arq.worker.Worker": "ff1be6ebd0ee059852f18601976ba0c827859094f3d8a940102fe1c0ef60d793",
    "arq.worker.Worker.__init__": "edfb0cd7e05e77cf83392f7733ae03f3554c69f12df39da8833d2c5218d77f41",
    "arq.worker.Worker.run": "e683c7f402930145d502fa1e8720aaec4b543a5067e9f99b7291734d7a35453e",
    "arq.worker.Worker.main": "45ca1591c9717466eec76e17fa958f84acf6085103d692a84ee25d9904e7f8fc",
    "arq.worker.Worker._poll_iteration": "f8d39d823a0a59f27a45f1c0e80bee44e16219d5072235fbc81866402298322f",
    "arq.worker.Worker._cancel_aborted_jobs": "54575eaf8682f95be0d6ac5946c60bfdda41500552ac52975a4375d99f170c2f",
    "arq.worker.Worker._release_sem_dec_counter_on_complete": (
        "0ed101482e942c33a64ccbe19eb3c4d29da9497258b1ffb1380da300da9bc481"
    ),
    "arq.worker.Worker.start_jobs": "b45797cfa40bed7fe6e9b8b8100c5f5b4144fe85112155c4e355df6ed8521f5f",
    "arq.worker.Worker.run_job": "589a19059ff84ee777552dc9fa5ff76b17d6d0d7f99716d2720a2ed07ccb9607",
    "arq.worker.Worker.finish_job": "903f09c92830d3fd8044e19cc409074d9b62143218f73c3101a1ef5f724b22ce",
    "arq.worker.Worker.finish_failed_job": "3e16087f318a7acfbe79189a682d732fc43a3fce1917689e96990cb14d30bee2",
    "arq.worker.Worker.heart_beat": "2e9959bea66dc551c78ecf8dd03640a086bb64a0601f9bfb74b5f89b11365224",
    "arq.worker.Worker.run_cron": "7d2d3784e6567fb266a5fdf0ff5767b76d43f2a577847a17be80ec3d2cd68b31",
    "arq.worker.Worker._jobs_started": "c5643370c110c7cdbd82eb713cad8be255f77be028d3bb35e20257befbe35c61",
    "arq.worker.Worker.handle_sig": "985ff7ba01aa8f04269a46c0d1be4e86ccf1d67ef5cab3a1154a9633e7360981",
    "arq.worker.Worker.handle_sig_wait_for_completion": (
        "8f161d86834cc74ee2293cf004c5456c4c01614d651e6daa03f5d7d81863435f"
    ),
    "arq.worker.Worker._wait_for_tasks_to_complete": "c186389a00b11500e8644c6d050e4249488985639e6a01e40d77015400fccde8",
    "arq.worker.Worker.close": "5bcc9cb35668082910200a680f052cc5d36a8ce3b3c04a95ef32c14ebd7daaa1",
    "arq.worker.Worker.pool": "d6b9a7d2d5280e7fef6b3ad0939a9d1cea5cc1476a07d1c45a8a047a2db32f88",
    "arq.worker.Function": "98fad4a733bbb7d9aa55073392236842bfaaf999a8a3aa17353732ce7c227bcb",
    "arq.worker.func": "f44ddaf9b8a2bdbb75ce751afc51bc7f603e014adfc5f763f13e760d24f3e08f",
    "arq.worker.Retry": "d0bab8b0018e9431b01e4794031867cdd4854242198a4482f0d9df56eca22e7d",
    "arq.worker.RetryJob": "bef7772e42d6a66eb2df40fad32b05ca73c01787426eec145aaf7407e92d721c",
    "arq.worker.JobExecutionFailed": "592ff0ca9157d7547272a1120bb4af166d3a5b5e87f13532287308445a131575",
    "arq.worker.no_result": "5fb384a34b41a4801e97d9cbc0a691f45ef4d15094d47064bc17ec7d193f5b9a",
    "arq.worker.logger": "bf3e1752a12a6e2073737833a7a7f9ff3dac3bd775469a9ca442fc2bfd0135d6",
    "arq.jobs.serialize_job": "1fc854cc50e16e5c87d1844690acf67aed89338ee28f456f61ecf504c96d99cd",
    "arq.jobs.serialize_result": "709b9d4709d5aa083f098619ca24c5b7b6159841a9902ec38ac8dc0ea411b942",
    "arq.jobs.deserialize_job_raw": "f330dfaff8e2160fda1b3a3a3735ae5e6d591571044da729a6f1c505c862b50c",
    "arq.jobs.SerializationError": "80460f26f59d96bcf97c0173f8148c0fb4af1ff27a2c0f3283ad7d1f37a469b7",
    "arq.jobs.DeserializationError": "ec386b827f4a41c26e4bcaa54b0fc024572dd7937737f1f966fb6ca792028245",
    "arq.jobs.Job.abort": "4dd2f914d8b776b71ef6cae47d6658722ec331b8a64fb2123bf736ce9cbe321f",
    "arq.connections.ArqRedis.__init__": "2e8bd7e180d895c86f26dd059f510cbd793c0ed1045e8b803e8decd79cbdaf4e",
    "arq.connections.ArqRedis.enqueue_job": "7da8706a747c117172047b3ae7405bd450ead0c09b5043c65325661b580b1ce1",
    "arq.connections.create_pool": "4eff5aaa2071f0206aabca1cacacb6ad34404e182c83d7b2c0b69d0c91d5dc15",
    "arq.connections.RedisSettings": "79702464a94878b1834b908b99a7d156346faae6a43358eb08f7827f7b47c40d",
    "arq.connections.log_redis_info": "6415f1bba78e4eedc20dc2ede59260337dce8fba5fe15beb0d8a1d19cde52c76",
    "arq.cron.CronJob": "03a1899789166ec5a07250f9d0754c181811938c19a7c00e459467086ffeb340",
    "arq.cron.cron": "0a1f968cdb4e0e050359dcc0c115be7f47e27dd0d1dd76aa0a9af6494dce0f9c",
    "arq.constants.job_key_prefix": "229e97f4bc5ff95f32b37da2e47cc6db275f4c26b6417fdea56d411f524e60f0",
    "arq.constants.in_progress_key_prefix": "bd5688547c0752ab3b16d2a54a315d5ed6720c19513f7f8245375ebfe90dc073",
    "arq.constants.retry_key_prefix": "13bfa9361a1eeb9c73e5632c8edf777316cb96ffd2fc59a9b3cad66d79729a28",
    "arq.constants.result_key_prefix": "1caac95d12e4107c40d71cfd968eba1de489ab6fe7fa8598a823700e59e9bec0",
    "arq.constants.abort_jobs_ss": "a96aea68f4e9f0a3d069a047673cf241c9ab0eeb0969684766e53fec6844ca6b",
    "arq.constants.abort_job_max_age": "39fa9ec190eee7b6f4dff1100d6343e10918d044c75eac8f9e9a2596173f80c9",
    "arq.constants.keep_cronjob_progress": "39fa9ec190eee7b6f4dff1100d6343e10918d044c75eac8f9e9a2596173f80c9",
    "arq.constants.expires_extra_ms": "619d6a33617fad349ba0aa57557416f206f833a77a836db358ea09d0d5e3156e",
    "arq.utils.timestamp_ms": "fb714827206ab4abf21e64c71f0f2c12b2586455c9aec625cf6ffc230f48993e",
    "arq.utils.to_ms": "ec599f40b2f33afb778aecfbb310b7fa5a2efd6d5a9c59b43601f266234b5f6a",
    "arq.utils.to_unix_ms": "306796b7c17c82c39a7b7fa9f0e39273f409dc6e218b347560baff8346b87a8b",
    "arq.utils.ms_to_datetime": "e4c817d861709803d3c054f5c1e0664215d900cc07aa13afff6f45f98e1eea4a",
}
"""Each internal's dotted name, and the SHA-256 of its source at :data:`ARQ_VERSION` (:func:`fingerprint`)."""

INIT_ATTRIBUTES = frozenset(
    {
        "_handle_signals",
        "_job_completion_wait",
        "_pool",
        "aborting_tasks",
        "after_job_end",
        "allow_abort_jobs",
        "allow_pick_jobs",
        "burst",
        "ctx",
        "expires_extra_ms",
        "functions",
        "health_check_key",
        "in_progress_timeout_s",
        "job_counter",
        "job_deserializer",
        "job_serializer",
        "job_tasks",
        "job_timeout_s",
        "jobs_complete",
        "jobs_failed",
        "jobs_retried",
        "keep_result_forever",
        "keep_result_s",
        "loop",
        "max_burst_jobs",
        "max_jobs",
        "max_tries",
        "on_job_end",
        "on_job_start",
        "on_shutdown",
        "on_startup",
        "poll_delay_s",
        "queue_name",
        "queue_read_limit",
        "redis_settings",
        "retry_jobs",
        "sem",
        "tasks",
    }
)
"""The attributes ARQ's ``Worker.__init__`` sets that our subclasses read or change."""


@dataclass(frozen=True)
class Drift:
    """An internal that is not as it was at :data:`ARQ_VERSION`."""

    name: str
    problem: str
    reliance: str
    """Where and why we rely on it (its entry in the module docstring)."""

    def __str__(self) -> str:
        return f"{self.name} {self.problem}: {self.reliance}"


def resolve(name: str) -> object:
    """The object a dotted name names (``arq.worker.Worker.run_job``), as defined, without calling descriptors.

    Raises ImportError or AttributeError if it does not exist.
    """
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = inspect.getattr_static(found, attribute)
        return found
    raise ImportError(f"no module in {name!r}")


def fingerprint(found: object) -> str:
    """The SHA-256 of a function's, class's or module's source; of a value's ``repr`` otherwise.

    A property or a static or class method counts as its function; a logger as its name; a plain
    ``object()`` sentinel as such (its ``repr`` holds its address).
    """
    if isinstance(found, property):
        found = found.fget
    if isinstance(found, staticmethod | classmethod):
        found = found.__func__
    if inspect.isroutine(found) or inspect.isclass(found) or inspect.ismodule(found):
        text = inspect.getsource(found)
    elif isinstance(found, logging.Logger):
        text = f"logging.getLogger({found.name!r})"
    elif type(found) is object:
        text = "object()"
    else:
        text = repr(found)
    return hashlib.sha256(text.encode()).hexdigest()


def init_attributes() -> frozenset[str]:
    """The attributes the installed ARQ's ``Worker.__init__`` assigns (``self.<name> = ...``)."""
    init = resolve("arq.worker.Worker.__init__")
    if not inspect.isfunction(init):
        raise TypeError("arq.worker.Worker.__init__ is not a function")
    tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    assigned: set[str] = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                assigned.add(target.attr)
    return frozenset(assigned)


def reliance(name: str) -> str:
    """Where and why we rely on ``name``: its entry in this module's docstring, on one line."""
    for entry in re.split(r"\n\* ", __doc__ or ""):
        if f"``{name}``" in entry:
            return " ".join(entry.split("\n\n")[0].split())
    return "(not described in services.queue.arq_internals)"


def drifted() -> list[Drift]:
    """The internals whose fingerprint differs from :data:`FINGERPRINTS` or that are gone, and the
    attributes of :data:`INIT_ATTRIBUTES` that ``Worker.__init__`` no longer sets."""
    found: list[Drift] = []
    for name, expected in FINGERPRINTS.items():
        try:
            actual = fingerprint(resolve(name))
        except (ImportError, AttributeError):
            found.append(Drift(name, "is gone", reliance(name)))
        except (OSError, TypeError):  # installed without its source
            found.append(Drift(name, "has no source to compare", reliance(name)))
        else:
            if actual != expected:
                found.append(Drift(name, "changed", reliance(name)))
    try:
        assigned = init_attributes()
    except (ImportError, AttributeError, OSError, TypeError):
        assigned = frozenset()
    for attribute in sorted(INIT_ATTRIBUTES - assigned):
        problem = f"no longer sets self.{attribute}"
        found.append(Drift("arq.worker.Worker.__init__", problem, reliance("arq.worker.Worker.__init__")))
    return found
