"""``make run``: Postgres and Redis (private ones under ``var/`` if need be), migrations, then ``Procfile.dev``.

One process owns the whole run, so that the private servers it starts are stopped when the run
ends, however it ends: Ctrl-C, SIGTERM, SIGHUP (the terminal closed), a process of the Procfile
stopping, a failed migration. The services are stopped before the servers they use.

Real environment variables win over ``.env``: the processes get this process's environment (not
``.env``, which the services read themselves through pydantic-settings), plus the URLs of the
private servers, the SMTP catcher's address and a development API key. The printed hint's port
and the catcher's address come from the same settings as the services'.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from services.core.settings import Settings, load_settings
from services.devstack.processes import DevServerError
from services.devstack.servers import dependencies, provided
from services.devstack.supervisor import run_procfile

ROOT = Path(__file__).resolve().parents[2]
VAR_DIR = ROOT / "var"
PROCFILE = ROOT / "Procfile.dev"
_API_KEYS_LINE = re.compile(r"^[ \t]*(export[ \t]+)?API_KEYS=", re.MULTILINE)


def development_key(environ: Mapping[str, str], env_file: Path) -> str | None:
    """A fresh API key for this run, or None when API_KEYS is set in the environment or in ``env_file``.

    ``API_KEYS=`` (empty) in ``.env`` counts as set: it is how a developer runs without keys.
    """
    if environ.get("API_KEYS"):
        return None
    if env_file.is_file() and _API_KEYS_LINE.search(env_file.read_text("utf-8", errors="replace")):
        return None
    return secrets.token_urlsafe(24)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Before honcho takes over SIGINT and SIGTERM: stop at once, and let a second signal wait for the cleanup."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _hang_up(signum: int, frame: FrameType | None) -> None:
    """The terminal closed: stop as on SIGTERM, through whichever SIGTERM handler is in place."""
    signal.raise_signal(signal.SIGTERM)


def run(settings: Settings) -> int:
    """Everything ``make run`` does after the settings are read; its exit status."""
    with provided(dependencies(settings), var_dir=VAR_DIR) as urls:
        env = {**os.environ, **urls}
        migrated = subprocess.run([sys.executable, "-m", "services.ledger.migrate"], env=env, cwd=ROOT, check=False)
        if migrated.returncode != 0:
            return migrated.returncode
        env["SMTP_HOST"] = settings.smtp_host
        env["SMTP_PORT"] = str(settings.smtp_port)
        key = development_key(os.environ, ROOT / ".env")
        if key is not None:
            env["API_KEYS"] = key
            print(f"Development API key: {key}")
            print(f"  export KEY={key}")
            print(f'  curl -X POST -H "Authorization: Bearer $KEY" http://127.0.0.1:{settings.gateway_port}/process')
        sys.stdout.flush()
        status = run_procfile(PROCFILE, env)
        # The processes are down; nothing may cut short the servers' shutdown that follows.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return status


def main() -> None:
    """Entry point of ``make run``."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _hang_up)
    settings = load_settings()
    try:
        status = run(settings)
    except DevServerError as exc:
        sys.stderr.write(f"make run: {exc}\n")
        status = 1
    except KeyboardInterrupt:
        status = 130
    raise SystemExit(status)


if __name__ == "__main__":
    main()
