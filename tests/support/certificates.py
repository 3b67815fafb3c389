"""A certificate authority made for a test run, and server certificates it signs (with ``openssl``).

The test CA is trusted by nothing but the tests that name its file, as a private CA is in
production (``SMTP_CA_FILE``). It signs a certificate for ``localhost`` and ``127.0.0.1`` and one
for another host name only, whose use by a server on 127.0.0.1 is a host name mismatch.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {names}
"""


@dataclass(frozen=True)
class ServerCertificate:
    """A certificate and its key, as files."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@dataclass(frozen=True)
class TestCertificates:
    """The CA's certificate file, and the server certificates it signed."""

    __test__ = False  # not a test class, whatever its name

    ca_file: Path
    local: ServerCertificate
    """For ``localhost`` and ``127.0.0.1``."""
    other_host: ServerCertificate
    """For ``mail.other.example`` only."""


def make_certificates(directory: Path) -> TestCertificates:
    """A new CA in ``directory`` and the two server certificates; skips the test without ``openssl``."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test CA")
    ca_key, ca_file = directory / "ca.key", directory / "ca.pem"
    _openssl(
        "req", "-x509", *_CURVE, "-keyout", ca_key, "-out", ca_file, "-days", "2",
        "-subj", "/CN=Afterword test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    local = _server(directory, "local", "localhost", "DNS:localhost, IP:127.0.0.1", ca_file, ca_key)
    other = _server(directory, "other", "mail.other.example", "DNS:mail.other.example", ca_file, ca_key)
    return TestCertificates(ca_file=ca_file, local=local, other_host=other)


def _server(directory: Path, stem: str, common_name: str, names: str, ca_file: Path, ca_key: Path) -> ServerCertificate:
    key, request, cert = (directory / f"{stem}.{suffix}" for suffix in ("key", "csr", "pem"))
    extensions = directory / f"{stem}.ext"
    extensions.write_text(_SERVER_EXTENSIONS.format(names=names))
    _openssl("req", *_CURVE, "-keyout", key, "-out", request, "-subj", f"/CN={common_name}")
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca_file, "-CAkey", ca_key, "-out", cert, "-days", "2",
        "-set_serial", str(secrets.randbits(63)), "-extfile", extensions,
    )  # fmt: skip
    return ServerCertificate(cert=cert, key=key)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
