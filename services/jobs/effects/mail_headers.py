"""The header lines of the mailer's emails: written here from the values given, never parsed from them.

The standard library's email package parses every header value it is handed, and decodes the
RFC 2047 encoded words in it (``=?utf-8?q?...=0D=0ABcc:...?=``). An interpreter without the fix
for CVE-2024-6923 then writes a decoded line break out as it is: a subject or a name could end its
header line and add lines of its own (a ``Bcc``, a ``Content-Type`` and a body). The mailer
does not depend on the interpreter's patch level for this, twice over:

* Every value from outside (subject, recipient, the sender's name) is written into header lines
  here. Plain printable ASCII without ``=?`` is written as it is, folded at its spaces; any
  other text is written whole as UTF-8 encoded words of our own (base64), so text that looks
  like an encoded word reaches the reader as that literal text, never decoded. A value holding
  a control character (a line break, say) is refused, as is an address that is not one plain
  ``local@domain`` mailbox or that holds ``=?``.
* :func:`check_header_block` reads the serialized header block back before it is sent: exactly
  the header names the mailer built, as often as it built them, and no value that holds a
  control character or an encoded word (found anywhere, decoded in any charset) that decodes to
  one.

A refusal is :class:`HeaderRefused`: a permanent error (the same values fail the same way on
every try), and a ``ValueError`` for callers outside a job.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.policy
import re
from collections.abc import Iterable, Sequence
from email.parser import BytesHeaderParser
from email.policy import Policy
from typing import Any, NamedTuple, Self

from services.jobs.errors import PermanentError

MAX_LINE = 76
"""Longest line written, without its CRLF (RFC 2047 section 2 for lines holding encoded words)."""
_WORD_BYTES = 39
"""UTF-8 bytes in one encoded word: ``=?utf-8?b?`` + 52 base64 characters + ``?=`` is 64
characters, so ``Subject: `` and one word fit in :data:`MAX_LINE`."""
_PLAIN_WORD = 60
"""A plain word longer than this makes the value encoded words (which can be split anywhere)."""
MAX_ADDRESS = 254
"""Longest address (RFC 5321's limit on a path, less its angle brackets)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Control characters (C0, DEL, C1) and the Unicode line separators: never in a header value."""
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")
"""Printable ASCII words with one space between them: written as they are."""
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
"""A display name of RFC 5322 atoms: written as it is."""
_QUOTABLE = re.compile(r"[ -~]*")
"""A display name of printable ASCII: written as a quoted string."""
_ATEXT = r"[^\s\x00-\x1f\x7f-\x9f\"(),.:;<>@\[\\\]]+"
_MAILBOX = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")
"""An address: dot-atoms (non-ASCII allowed, for SMTPUTF8) on both sides of one ``@``."""
_NAMED = re.compile(r"(?P<name>.*?)\s*<(?P<address>[^<>]*)>")
"""``name <address>``: the address in the last angle brackets."""
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
"""A quoted display name, backslash escapes in it."""
_ID_PART = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
_MESSAGE_ID = re.compile(rf"<{_ID_PART}@{_ID_PART}>")
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
"""A header field name: printable ASCII but the colon (RFC 5322 section 3.6.8)."""
_ANY_ENCODED_WORD = re.compile(r"=\?([^?]*?)\?([bBqQ])\?(.*?)\?=")
"""Anything a lenient reader decodes as an encoded word, wherever it stands (whitespace in it
included): the pattern of ``email.header.decode_header``, looser than the modern parser's."""
_READER = email.policy.compat32
"""How the block is read back by the standard library: its parser, values kept as written."""


class HeaderRefused(PermanentError, ValueError):
    """A value cannot go into a header safely, or a serialized header block is not what was built."""


class Mailbox(NamedTuple):
    """One address with its display name ("" for none), as given: nothing decoded."""

    display_name: str
    address: str


class BuiltHeader(str):
    """A header whose lines this module wrote.

    The email package keeps a value that has a ``name`` as it is (``header_store_parse``) and
    writes it out with its ``fold`` (``policy.fold``), so these lines reach the wire unchanged. As
    a string it is the value's text, as ``message[name]`` reads for a header the package parsed.
    """

    name: str
    lines: tuple[str, ...]
    defects: tuple[()] = ()

    def __new__(cls, name: str, text: str, lines: Sequence[str]) -> Self:
        header = super().__new__(cls, text)
        header.name = name
        header.lines = tuple(lines)
        return header

    def fold(self, *, policy: Policy) -> str:
        """The header's lines, each ended by the policy's line separator."""
        return policy.linesep.join(self.lines) + policy.linesep

    def __copy__(self) -> Self:
        return self  # immutable, as the email package's header objects are

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self  # the generator deep-copies a message whose body it re-encodes for a 7-bit server


class TextHeader(BuiltHeader):
    """An unstructured header (Subject)."""


class AddressHeader(BuiltHeader):
    """A header naming one mailbox (From, To)."""

    mailbox: Mailbox

    @classmethod
    def of(cls, name: str, mailbox: Mailbox) -> AddressHeader:
        """The header for ``mailbox``, its display name written as atoms, a quoted string or encoded words."""
        if not mailbox.display_name:
            return cls._made(name, mailbox, mailbox.address, [mailbox.address])
        tokens = [*_phrase(mailbox.display_name), f"<{mailbox.address}>"]
        text = f"{mailbox.display_name} <{mailbox.address}>"
        return cls._made(name, mailbox, text, tokens)

    @classmethod
    def _made(cls, name: str, mailbox: Mailbox, text: str, tokens: list[str]) -> AddressHeader:
        header = cls(name, text, _fold(name, tokens))
        header.mailbox = mailbox
        return header


class IdHeader(BuiltHeader):
    """A Message-ID."""


def mailbox(value: str, *, what: str) -> Mailbox:
    """The one mailbox ``value`` names: ``local@domain``, ``Name <local@domain>`` or ``"Name" <...>``.

    The display name is taken as written (a quoted one unquoted), never decoded.
    """
    _refuse_control(value, what)
    named = _NAMED.fullmatch(value.strip())
    name, address = (named["name"].strip(), named["address"].strip()) if named else ("", value.strip())
    if _QUOTED.fullmatch(name):
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    elif any(special in name for special in '<>"'):
        raise HeaderRefused(f'{what}: a display name holding <, > or " must be quoted')
    if not _MAILBOX.fullmatch(address) or len(address) > MAX_ADDRESS:
        raise HeaderRefused(f"{what}: not one plain address such as 'Name <user@example.com>'")
    if "=?" in address:
        raise HeaderRefused(f"{what}: an address holding '=?' (mail software decodes it as an encoded word)")
    return Mailbox(name, address)


def text_header(name: str, text: str) -> TextHeader:
    """An unstructured header holding ``text`` as it is written."""
    _refuse_control(text, name)
    words = text.split(" ")
    plain = _PLAIN_TEXT.fullmatch(text) and "=?" not in text and max(map(len, words)) <= _PLAIN_WORD
    return TextHeader(name, text, _fold(name, words if plain else _encoded_words(text, what=name)))


def id_header(name: str, message_id: str) -> IdHeader:
    """A Message-ID header: ``<left@right>``, both sides dot-atoms of letters, digits and ``_+-``."""
    if not _MESSAGE_ID.fullmatch(message_id):
        raise HeaderRefused(f"{name}: {message_id!r} is not a valid Message-ID")
    return IdHeader(name, message_id, [f"{name}: {message_id}"])


def check_header_block(data: bytes, *, names: Iterable[str]) -> None:
    """Refuse a serialized message whose header block is not exactly the headers named ``names``.

    The block is read twice: line by line here (each line continues a header or starts one, with
    CRLF line ends only) and by the standard library's parser; both must find the headers named
    ``names``, each as often as it was built. No header value may hold a control character, or
    hold anything a lenient reader would decode as an encoded word (wherever it stands, in any
    charset) to text holding one.
    """
    head, blank, _ = data.partition(b"\r\n\r\n")
    if not blank:
        raise HeaderRefused("serialized message: no blank line after the header block")
    expected = sorted(name.lower() for name in names)
    found: list[str] = []
    for line in head.split(b"\r\n"):
        if b"\r" in line or b"\n" in line:
            raise HeaderRefused("serialized header block: a bare CR or LF")
        if line[:1] in (b" ", b"\t") and found:
            continue
        label, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(label):
            raise HeaderRefused(f"serialized header block: a line that starts no header: {line[:40]!r}")
        found.append(label.decode("ascii").lower())
    if sorted(found) != expected:
        raise HeaderRefused(f"serialized header block: headers {sorted(found)}, built {expected}")
    parsed = BytesHeaderParser(policy=_READER).parsebytes(head + b"\r\n\r\n")
    read = list(parsed.raw_items())
    if parsed.defects or sorted(field.lower() for field, _ in read) != expected:
        raise HeaderRefused(f"serialized header block: read back as {[field for field, _ in read]}")
    for field, value in read:
        unfolded = re.sub(r"\r\n(?=[ \t])", "", value).replace("\t", " ")
        if _CONTROL.search(unfolded):
            raise HeaderRefused(f"serialized header block: {field} holds a control character")
        for word in _ANY_ENCODED_WORD.finditer(unfolded):
            if _CONTROL.search(_decoded(word)):
                raise HeaderRefused(f"serialized header block: an encoded word in {field} decodes to a control")


def _refuse_control(value: str, what: str) -> None:
    if _CONTROL.search(value):
        raise HeaderRefused(f"{what}: holds a line break or another control character")


def _phrase(name: str) -> list[str]:
    """A display name as tokens: its atoms, one quoted string, or encoded words."""
    if "=?" not in name and _ATOMS.fullmatch(name) and len(name) <= _PLAIN_WORD:
        return name.split(" ")
    if "=?" not in name and _QUOTABLE.fullmatch(name) and len(name) <= _PLAIN_WORD:
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return _encoded_words(name, what="display name")


def _encoded_words(text: str, *, what: str) -> list[str]:
    """``text`` as UTF-8 base64 encoded words, each whole characters of at most :data:`_WORD_BYTES`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HeaderRefused(f"{what}: not valid Unicode (a lone surrogate)") from None
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            chunks.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk:
        chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(part).decode('ascii')}?=" for part in chunks]


def _fold(name: str, tokens: Iterable[str]) -> list[str]:
    """``Name: token token ...`` in lines of at most :data:`MAX_LINE` where tokens allow; a fold
    (CRLF and a space) stands where a space stood, or between encoded words, where whitespace is
    not part of the text (RFC 2047 section 6.2)."""
    label = f"{name}:"
    lines = [label]
    for token in tokens:
        if lines[-1] != label and len(lines[-1]) + 1 + len(token) > MAX_LINE:
            lines.append(" " + token)
        else:
            lines[-1] += " " + token
    return lines


def _decoded(word: re.Match[str]) -> str:
    """An encoded word's text, decoded leniently; one that no reader could decode is refused."""
    charset, encoding, text = word.groups()
    try:
        codec = codecs.lookup(charset.split("*")[0]).name
        raw = text.encode("ascii")
        if encoding in "bB":
            return base64.b64decode(raw + b"=" * (-len(raw) % 4)).decode(codec, "replace")
        return binascii.a2b_qp(raw, header=True).decode(codec, "replace")
    except (LookupError, ValueError) as exc:  # UnicodeError and binascii.Error are ValueErrors
        raise HeaderRefused(f"serialized header block: an encoded word no reader decodes ({exc})") from None
