"""The client's flows, driven step by step: what is sent again, after what, how long after, with what.

A flow does no I/O (``afterword_client.steps``): these tests play the driver, answering each step
with a real ``httpx.Response`` or transport error, and read what the flow asked for. The same
flows run against the real gateway in ``tests/integration/test_python_client.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from afterword_client import (
    APIError,
    Conflict,
    JobStatus,
    NotFound,
    RetryPolicy,
    ServerError,
    TransportError,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
    WriteLog,
)
from afterword_client.endpoint import Endpoint
from afterword_client.errors import error_for, retry_after
from afterword_client.flows import Flows, defer_seconds, idempotency_key
from afterword_client.records import Accepted, Job, JobSummary, StatusEvent
from afterword_client.sse import Decoder, Event
from afterword_client.steps import Close, Emit, Flow, Open, Outcome, ReadLine, Send, Sleep, Step
from pydantic import BaseModel

from services.gateway import schemas

JOB_ID = "0123456789abcdef0123456789abcdef"
POLICY = RetryPolicy(attempts=4, backoff=0.1, max_backoff=1.0)


def answer(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers={name.replace("_", "-"): v for name, v in headers.items()})


def accepted_body(status: str = "queued") -> dict[str, Any]:
    return {"id": JOB_ID, "name": "write_log", "status": status, "status_url": f"http://gw/jobs/{JOB_ID}"}


def job_body(status: str) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "name": "write_log",
        "payload": {"message": "hi"},
        "status": status,
        "tries": 1,
        "result": None,
        "error": None,
        "enqueued_at": "2026-01-05T19:26:59.956844+00:00",
        "run_at": "2026-01-05T19:26:59.956309+00:00",
        "started_at": None,
        "finished_at": None,
        "request_id": "r",
        "attempts": [],
    }


def event_lines(status: str, at: str) -> list[str]:
    data = {"id": JOB_ID, "status": status, "tries": 1, "error": None, "at": at}
    return ["event: status", f"data: {json.dumps(data)}", ""]


class Played:
    """What a flow asked for, and what it returned, when its I/O steps got ``outcomes`` in order."""

    def __init__(self, flow: Flow[Any, Any], outcomes: Sequence[Outcome]) -> None:
        self.steps: list[Step[Any]] = []
        self.emitted: list[Any] = []
        pending = list(outcomes)
        outcome: Outcome = None
        while True:
            try:
                step = flow.send(outcome)
            except StopIteration as done:
                self.result = done.value
                break
            self.steps.append(step)
            outcome = None
            if isinstance(step, Emit):
                self.emitted.append(step.value)
            elif isinstance(step, Send | Open | ReadLine):
                outcome = pending.pop(0)
        assert pending == [], "the flow stopped before using every outcome"

    @property
    def sent(self) -> list[Send]:
        return [step for step in self.steps if isinstance(step, Send)]

    @property
    def sleeps(self) -> list[float]:
        return [step.seconds for step in self.steps if isinstance(step, Sleep)]


def play(flow: Flow[Any, Any], outcomes: Sequence[Outcome]) -> Played:
    return Played(flow, outcomes)


def enqueue(flows: Flows, **options: Any) -> Flow[Any, Accepted]:
    settings: dict[str, Any] = {"defer_by": None, "run_at": None, "idempotency_key": None, **options}
    return flows.enqueue(WriteLog(message="hi"), None, **settings)


# Which failures are retried, and how.


def test_an_enqueue_is_sent_again_with_the_same_key_and_bytes_until_it_is_accepted() -> None:
    played = play(
        enqueue(Flows(POLICY)),
        [
            httpx.ReadError("connection reset"),
            answer(503, {"detail": "the jobs ledger (Postgres) is unavailable"}, retry_after="5"),
            answer(409, {"detail": "still being processed"}, retry_after="1"),
            answer(202, accepted_body(), idempotent_replayed="true"),
        ],
    )

    calls = [step.call for step in played.sent]
    assert len(calls) == 4
    assert all(call == calls[0] for call in calls), "the same request each time"
    key = calls[0].headers["Idempotency-Key"]
    assert played.result == Accepted.model_validate({**accepted_body(), "idempotency_key": key, "replayed": True})
    assert json.loads(calls[0].content or b"") == {"name": "write_log", "payload": {"message": "hi"}}
    assert played.sleeps[1] >= 5, "Retry-After of the 503"
    assert played.sleeps[2] >= 1, "Retry-After of the 409"


def test_a_409_without_retry_after_is_a_conflict_at_once() -> None:
    with pytest.raises(Conflict, match="only failed or cancelled"):
        play(
            Flows(POLICY).retry_job(JOB_ID, idempotency_key="k"),
            [answer(409, {"detail": f"job {JOB_ID} is succeeded; only failed or cancelled jobs can be retried"})],
        )


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (answer(503, {"detail": "down"}, retry_after="5"), Unavailable),
        (httpx.ConnectError("refused"), TransportError),
        (answer(409, {"detail": "busy"}, retry_after="1"), Conflict),
    ],
)
def test_retries_are_bounded_and_end_with_the_last_failure(failure: Outcome, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        play(enqueue(Flows(POLICY)), [failure] * POLICY.attempts)

    if isinstance(raised.value, Unavailable):
        assert raised.value.retry_after == 5


def test_reads_are_sent_again_after_a_503_or_a_broken_connection() -> None:
    played = play(
        Flows(POLICY).get(JOB_ID),
        [answer(503, {"detail": "down"}), httpx.RemoteProtocolError("gone"), answer(200, job_body("succeeded"))],
    )

    assert len(played.sent) == 3
    assert played.result.status is JobStatus.succeeded


def test_a_cancel_is_sent_again_only_when_it_cannot_have_arrived() -> None:
    reached = [httpx.ReadError("reset after sending")]
    never_sent: list[Outcome] = [httpx.ConnectError("refused"), answer(200, job_body("cancelled"))]

    with pytest.raises(TransportError, match="ReadError"):
        play(Flows(POLICY).cancel(JOB_ID), reached)
    played = play(Flows(POLICY).cancel(JOB_ID), never_sent)
    with pytest.raises(Unavailable):
        play(Flows(POLICY).cancel(JOB_ID), [answer(503, {"detail": "down"})])

    assert played.result.status is JobStatus.cancelled


def test_one_attempt_turns_retries_off() -> None:
    with pytest.raises(TransportError):
        play(Flows(RetryPolicy(attempts=1)).get(JOB_ID), [httpx.ConnectError("refused")])


def test_an_idempotency_key_is_made_or_checked() -> None:
    made = {idempotency_key(None) for _ in range(3)}

    assert len(made) == 3
    assert idempotency_key("order-42") == "order-42"
    for bad in ("", "x" * 256, "caf\u00e9", "a\nb"):
        with pytest.raises(ValueError, match="Idempotency-Key"):
            idempotency_key(bad)


def test_a_payload_model_that_is_no_job_s_is_refused() -> None:
    class Stray(WriteLog):
        pass

    with pytest.raises(TypeError, match="Stray"):
        Flows(POLICY).enqueue(Stray(message="x"), None, defer_by=None, run_at=None, idempotency_key=None)


# defer_by and run_at.


def test_run_at_becomes_the_seconds_from_now() -> None:
    soon = defer_seconds(defer_by=None, run_at=datetime.now(UTC) + timedelta(minutes=1))

    assert soon is not None
    assert 58 < soon <= 60
    assert defer_seconds(defer_by=None, run_at=datetime.now(UTC) - timedelta(minutes=1)) is None, "past: now"
    assert defer_seconds(defer_by=timedelta(hours=1), run_at=None) == 3600
    assert defer_seconds(defer_by=2.5, run_at=None) == 2.5
    with pytest.raises(ValueError, match="not both"):
        defer_seconds(defer_by=1, run_at=datetime.now(UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        defer_seconds(defer_by=None, run_at=datetime.now())


def test_the_delay_is_computed_once_for_every_retry() -> None:
    played = play(
        enqueue(Flows(POLICY), run_at=datetime.now(UTC) + timedelta(hours=1)),
        [httpx.ReadTimeout("slow"), answer(202, accepted_body("deferred"))],
    )

    first, second = (json.loads(step.call.content or b"") for step in played.sent)
    assert first == second
    assert 3590 < first["defer_by"] <= 3600


# Long polls, pages and event streams.


def test_wait_asks_again_until_the_job_ends() -> None:
    played = play(
        Flows(POLICY).wait(JOB_ID, None),
        [answer(200, job_body("deferred")), answer(200, job_body("in_progress")), answer(200, job_body("failed"))],
    )

    assert played.result.status is JobStatus.failed
    assert [dict(step.call.params) for step in played.sent] == [{"wait": "60.000"}] * 3
    assert all((step.call.read_timeout or 0) > 60 for step in played.sent)


def test_wait_gives_up_after_its_timeout_with_the_last_record() -> None:
    with pytest.raises(WaitTimeout) as gave_up:
        play(Flows(POLICY).wait(JOB_ID, 0), [answer(200, job_body("queued"))])

    assert gave_up.value.job.status is JobStatus.queued


def summaries(*ids: str) -> list[dict[str, Any]]:
    return [
        {
            "id": job_id,
            "name": "write_log",
            "status": "failed",
            "tries": 1,
            "error": "e",
            "enqueued_at": "2026-01-05T19:26:59+00:00",
            "started_at": None,
            "finished_at": None,
        }
        for job_id in ids
    ]


def test_a_listing_follows_the_cursor_until_the_last_page() -> None:
    played = play(
        Flows(POLICY).jobs(status="failed", name=None, limit=None, page_size=2),
        [
            answer(200, {"jobs": summaries("a", "b"), "next_cursor": "c1", "next": "…"}),
            answer(200, {"jobs": summaries("c"), "next_cursor": None, "next": None}),
        ],
    )

    assert [job.id for job in played.emitted] == ["a", "b", "c"]
    assert [dict(step.call.params) for step in played.sent] == [
        {"limit": "2", "status": "failed"},
        {"limit": "2", "status": "failed", "cursor": "c1"},
    ]


def test_a_listing_stops_at_its_limit() -> None:
    played = play(
        Flows(POLICY).jobs(status=None, name="write_log", limit=3, page_size=2),
        [
            answer(200, {"jobs": summaries("a", "b"), "next_cursor": "c1", "next": "…"}),
            answer(200, {"jobs": summaries("c"), "next_cursor": "c2", "next": "…"}),
        ],
    )

    assert [job.id for job in played.emitted] == ["a", "b", "c"]
    assert [dict(step.call.params)["limit"] for step in played.sent] == ["2", "1"]


def test_an_event_stream_is_reopened_and_each_status_passed_on_once() -> None:
    t1, t2, t3 = "2026-01-05T19:40:02+00:00", "2026-01-05T19:40:32+00:00", "2026-01-05T19:40:33+00:00"
    stream = answer(200)
    played = play(
        Flows(POLICY).events(JOB_ID),
        [
            stream,
            "retry: 2000",
            "",
            *event_lines("deferred", t1),
            httpx.ReadError("the gateway went away"),
            stream,
            ": ping",
            "",
            *event_lines("deferred", t1),  # the current status, first on the new stream
            *event_lines("in_progress", t2),
            *event_lines("succeeded", t3),
        ],
    )

    assert [event.status for event in played.emitted] == ["deferred", "in_progress", "succeeded"]
    assert all(isinstance(event, StatusEvent) for event in played.emitted)
    assert played.sleeps[0] >= 2, "the stream's retry: field"
    assert isinstance(played.steps[-1], Close)


def test_an_event_stream_of_an_unknown_job_is_not_found() -> None:
    with pytest.raises(NotFound):
        play(Flows(POLICY).events(JOB_ID), [answer(404, {"detail": "no job"})])


def test_an_event_stream_that_keeps_breaking_is_given_up() -> None:
    with pytest.raises(TransportError, match="ended before the job did"):
        play(Flows(POLICY).events(JOB_ID), [answer(200), None] * POLICY.attempts)


def test_the_sse_decoder_reads_events_as_the_standard_says() -> None:
    decoder = Decoder()
    lines = [": comment", "data: one", "data:two", "", "event: status", "data: {}", "id: 7", "", "", "retry: 1500"]

    events = [event for line in lines if (event := decoder.feed(line)) is not None]

    assert events == [Event(event="message", data="one\ntwo"), Event(event="status", data="{}")]
    assert decoder.retry_seconds == 1.5


# Errors, and the gateway's answers as records.


def test_a_422_names_each_field() -> None:
    detail = [
        {"type": "value_error", "loc": ["body", "payload", "to"], "msg": "not an email address"},
        {"type": "missing", "loc": ["query", "cursor"], "msg": "Field required"},
    ]

    error = error_for(answer(422, {"detail": detail}, x_request_id="req-1"))

    assert isinstance(error, ValidationFailed)
    assert error.fields == ["payload.to", "cursor"]
    assert error.request_id == "req-1"
    assert str(error) == "422: payload.to: not an email address; cursor: Field required"


def test_other_statuses_map_to_their_errors() -> None:
    assert type(error_for(answer(502, {"detail": "bad gateway"}))) is ServerError
    assert type(error_for(answer(418, {"detail": "teapot"}))) is APIError
    plain = error_for(httpx.Response(431, text="request line and headers larger than 32768 bytes"))
    assert plain.detail == "request line and headers larger than 32768 bytes"
    reused = error_for(answer(422, {"detail": "the Idempotency-Key was used for another request"}))
    assert isinstance(reused, ValidationFailed)
    assert reused.errors == ()


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    assert retry_after(answer(503, retry_after="5")) == 5
    assert 28 < (retry_after(answer(503, retry_after=later)) or 0) <= 30
    assert retry_after(answer(503, retry_after="soon")) is None
    assert retry_after(answer(503, retry_after="nan")) is None
    assert retry_after(answer(503)) is None


def test_the_backoff_grows_is_capped_and_yields_to_retry_after() -> None:
    policy = RetryPolicy(attempts=10, backoff=1, max_backoff=4, max_retry_after=30)

    assert all(0.5 <= policy.delay(1) <= 1 for _ in range(50))
    assert all(2 <= policy.delay(3) <= 4 for _ in range(50))
    assert all(2 <= policy.delay(100) <= 4 for _ in range(50))
    assert policy.delay(1, retry_after=5) == 5
    assert policy.delay(1, retry_after=600) == 30
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (Accepted, schemas.JobAcceptedView),
        (Job, schemas.JobView),
        (JobSummary, schemas.JobSummary),
        (StatusEvent, schemas.StatusEvent),
    ],
)
def test_the_records_have_the_gateway_s_fields(ours: type[BaseModel], theirs: type[BaseModel]) -> None:
    def names(model: type[BaseModel]) -> set[str]:
        return {field.serialization_alias or field.alias or name for name, field in model.model_fields.items()}

    client_only = {"idempotency_key", "replayed"}  # from the answer's headers
    assert names(ours) - client_only == names(theirs)


def test_the_endpoint_sends_the_key_as_a_bearer_token_and_never_shows_it() -> None:
    endpoint = Endpoint("http://gateway.example/afterword/", api_key="s3cret-key", timeout=5)
    step = next(Flows(POLICY).get(JOB_ID))
    assert isinstance(step, Send)
    with httpx.Client() as http:
        request = endpoint.request(http, step.call)

    assert str(request.url) == f"http://gateway.example/afterword/jobs/{JOB_ID}"
    assert request.headers["authorization"] == "Bearer s3cret-key"
    assert request.headers["user-agent"].startswith("afterword-client")
    assert "s3cret-key" not in repr(endpoint) + repr(request.headers)
    with pytest.raises(ValueError, match="base_url"):
        Endpoint("gateway.example:8000", api_key=None, timeout=5)
