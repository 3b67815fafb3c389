"""``POST /jobs/<name>``: one typed route per job, built from the job definitions."""

from __future__ import annotations

import httpx

from services.contract import JOBS
from tests.support.jobs_client import wait_for_job


async def test_every_job_has_a_typed_route_with_its_payload_schema_and_example(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).raise_for_status().json()

    for name, definition in JOBS.items():
        operation = schema["paths"][f"/jobs/{name.value}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]
        request = schema["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
        assert request["properties"]["payload"]["$ref"] == f"#/components/schemas/{definition.payload.__name__}"
        assert body["examples"][name.value]["value"]["payload"] == dict(definition.example)


async def test_a_typed_route_queues_its_job(client: httpx.AsyncClient) -> None:
    accepted = await client.post("/jobs/write_log", json={"payload": {"message": "typed route"}})

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["name"] == "write_log"
    job = await wait_for_job(client, accepted.json()["id"])
    assert (job["name"], job["status"], job["payload"]) == ("write_log", "succeeded", {"message": "typed route"})


async def test_a_typed_route_names_the_field_it_refuses(client: httpx.AsyncClient) -> None:
    refused = await client.post("/jobs/send_email", json={"payload": {"to": "nobody", "subject": "s", "body": "b"}})
    too_late = await client.post("/jobs/write_log", json={"payload": {"message": "m"}, "defer_by": 8 * 24 * 3600})
    unknown = await client.post("/jobs/write_log", json={"payload": {"message": "m", "level": "x"}})

    assert refused.status_code == 422
    assert [error["loc"] for error in refused.json()["detail"]] == [["body", "payload", "to"]]
    assert too_late.status_code == 422
    assert [error["loc"] for error in too_late.json()["detail"]] == [["body", "defer_by"]]
    assert unknown.status_code == 422
    assert [error["loc"] for error in unknown.json()["detail"]] == [["body", "payload", "level"]]
