"""The SMTP server away, answering 451, or refusing with 550; and cancelling a running job."""

from __future__ import annotations

import uuid

from tests.faults.conftest import FaultStack, until
from tests.support.jobs_client import wait_for_job


def email_job(address: str) -> dict[str, object]:
    return {"name": "send_email", "payload": {"to": address, "subject": "s", "body": "b"}}


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def test_smtp_down_then_up_is_retried_and_delivered_once(stack: FaultStack) -> None:
    address = unique("smtp-down")
    stack.sink.stop()
    try:
        accepted = await stack.post("/jobs", email_job(address))

        async def retrying() -> bool:
            job = await stack.job(accepted["id"])
            return any(a["outcome"] == "retrying" for a in job["attempts"])

        await until(retrying, within=20, what="a failed delivery is being retried")
    finally:
        stack.sink.start()
    job = await wait_for_job(stack.http, accepted["id"], within=60)
    assert job["status"] == "succeeded"
    assert len(stack.sink.messages_to(address)) == 1


async def test_smtp_451_then_250(stack: FaultStack) -> None:
    address = unique("smtp-451")
    stack.sink.fail_next(2)
    accepted = await stack.post("/jobs", email_job(address))
    job = await wait_for_job(stack.http, accepted["id"], within=60)
    assert job["status"] == "succeeded"
    assert [a["outcome"] for a in job["attempts"]] == ["retrying", "retrying", "succeeded"]
    assert len(stack.sink.messages_to(address)) == 1


async def test_smtp_550_fails_at_once_and_a_manual_retry_delivers(stack: FaultStack) -> None:
    address = unique("smtp-550")
    stack.sink.refuse(address, 550)
    try:
        accepted = await stack.post("/jobs", email_job(address))
        failed = await wait_for_job(stack.http, accepted["id"], within=30)
        assert failed["status"] == "failed"
        assert [a["outcome"] for a in failed["attempts"]] == ["failed"]
        listed = (await stack.http.get("/jobs", params={"status": "failed", "name": "send_email"})).json()
        assert accepted["id"] in [job["id"] for job in listed["jobs"]]
    finally:
        stack.sink.accept(address)

    retried = await stack.http.post(f"/jobs/{accepted['id']}/retry")
    assert retried.status_code == 202, retried.text
    job = await wait_for_job(stack.http, accepted["id"], within=30)
    assert job["status"] == "succeeded"
    assert [a["outcome"] for a in job["attempts"]] == ["failed", "succeeded"]
    assert len(stack.sink.messages_to(address)) == 1


async def test_cancelling_a_running_job_aborts_it_and_nothing_is_sent(stack: FaultStack) -> None:
    address = unique("cancel-running")
    accepted, _worker = await stack.email_in_flight(address, delay=20)
    stack.cancelled.add(accepted["id"])
    stack.sink.slow_down(0)
    response = await stack.http.delete(f"/jobs/{accepted['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    async def aborted() -> bool:
        job = await stack.job(accepted["id"])
        return bool(job["attempts"]) and job["attempts"][-1]["outcome"] == "cancelled"

    await until(aborted, within=15, what="the running attempt was aborted")
    assert (await stack.http.delete(f"/jobs/{accepted['id']}")).status_code == 409
    assert stack.sink.messages_to(address) == []
