"""``make run``'s development API key: one per run, unless API_KEYS is set in the environment or in ``.env``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.devstack.__main__ import development_key
from services.devstack.processes import port_is_free
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_development_key_unless_api_keys_is_set(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    key = development_key({}, env_file)
    assert key is not None
    assert len(key) == 32
    assert development_key({"API_KEYS": "mine"}, env_file) is None
    env_file.write_text("GATEWAY_PORT=8001\n  export API_KEYS=\n")  # empty: runs without keys
    assert development_key({}, env_file) is None
    env_file.write_text("# API_KEYS=commented out\n")
    assert development_key({}, env_file) is not None


def test_make_run_names_a_url_set_in_the_environment_that_does_not_answer(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/afterword",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.devstack"],
        cwd=tmp_path,  # no .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"make run: postgres DOWN at 127.0.0.1:{port}: ")
    assert "DATABASE_URL is set in the environment, so make run starts no private server" in result.stderr
    assert "private server" not in result.stdout
    assert port_is_free("127.0.0.1", port)
