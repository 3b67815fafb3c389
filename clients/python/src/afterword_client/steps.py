"""The steps of a flow: what a flow asks its driver to do, and what it gets back.

Every operation of the client (an enqueue with its retries, a long poll, a walk through pages,
an event stream that reconnects) is written once, in :mod:`afterword_client.flows`, as a
generator that does no I/O: it yields steps and is sent their outcomes. :class:`~afterword_client.Client`
and :class:`~afterword_client.AsyncClient` are two drivers of the same flows, one blocking and
one with ``await``; they hold no logic of their own.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

import httpx

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)
R = TypeVar("R")


@dataclass(frozen=True)
class Call:
    """One HTTP request, relative to the gateway's base URL."""

    method: str
    path: str
    params: Sequence[tuple[str, str]] = ()
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout: float | None = None
    """Seconds to wait for the answer (or, on a stream, between two reads); the client's default if None."""


@dataclass(frozen=True)
class Send:
    """Send the call; the outcome is the answer, body read, or the ``httpx.TransportError``."""

    call: Call


@dataclass(frozen=True)
class Open:
    """Send the call and keep its answer's body open for :class:`ReadLine`.

    The outcome is the answer, or the ``httpx.TransportError``. An error answer comes with its body
    read and closed; a successful one stays open until :class:`Close`.
    """

    call: Call


@dataclass(frozen=True)
class ReadLine:
    """The next line of the open answer: a ``str``, None at its end, or the ``httpx.TransportError``."""


@dataclass(frozen=True)
class Close:
    """Close the open answer, if any (outcome None)."""


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds (outcome None)."""

    seconds: float


@dataclass(frozen=True)
class Emit(Generic[E_co]):
    """Hand a value to the caller of an iterating flow (outcome None)."""

    value: E_co


Step: TypeAlias = Send | Open | ReadLine | Close | Sleep | Emit[E]
Outcome: TypeAlias = httpx.Response | str | httpx.TransportError | None
Flow: TypeAlias = Generator[Step[E], Outcome, R]
"""A flow that may emit values of type ``E`` and returns an ``R``."""


def send(call: Call) -> Generator[Step[E], Outcome, httpx.Response | httpx.TransportError]:
    """``yield from send(call)``: the answer or the transport error."""
    outcome = yield Send(call)
    assert isinstance(outcome, httpx.Response | httpx.TransportError), outcome
    return outcome


def open_stream(call: Call) -> Generator[Step[E], Outcome, httpx.Response | httpx.TransportError]:
    """``yield from open_stream(call)``: the answer, its body left open when it succeeded, or the error."""
    outcome = yield Open(call)
    assert isinstance(outcome, httpx.Response | httpx.TransportError), outcome
    return outcome


def read_line() -> Generator[Step[E], Outcome, str | httpx.TransportError | None]:
    """``yield from read_line()``: the open answer's next line, None at its end, or the error."""
    outcome = yield ReadLine()
    assert not isinstance(outcome, httpx.Response), outcome
    return outcome
