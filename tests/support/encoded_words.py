"""RFC 2047 encoded words as a hostile user writes them, for the tests of the mail headers.

An encoded word (``=?charset?q?text?=`` or ``=?charset?b?base64?=``) is decoded by mail software
on the way in. Each value drawn here carries one or more encoded words whose decoded text holds a
line break and a header line (``Bcc``, ``Reply-To``, ``Content-Type`` and a body of its own):
Q and B encodings in upper and lower case, many charsets, the bytes split over several words, the
words folded across lines or run together, with plain text around them.
"""

from __future__ import annotations

import base64
import string

from hypothesis import strategies as st

ISSUE_NAME = "=?utf-8?q?Ada=0D=0AContent-Type:_text/html=0D=0A=0D=0A<a_href=3D//evil.io>Reset</a>?="
"""The signup name that once produced a real Content-Type header and an HTML body."""

INJECTIONS = [
    "\r\nBcc: eve@evil.example",
    "\r\nReply-To: eve@evil.example",
    "\r\nContent-Type: text/html\r\n\r\n<a href=//evil.example>Reset</a>",
    "\nBcc: eve@evil.example",
    "\rCc: eve@evil.example",
    "\r\n\r\nA body of the attacker's",
    "\r\n To: eve@evil.example",
    "\r\nX-Injected: yes\r\n",
    "\x00\r\nBcc: eve@evil.example",
]
"""Decoded text that would add a header line, or end the header block, if written out as it is."""

CHARSETS = [
    "utf-8",
    "UTF-8",
    "us-ascii",
    "iso-8859-1",
    "latin-1",
    "ISO-8859-15",
    "windows-1252",
    "utf-16",
    "utf-16-be",
    "utf-16-le",
    "shift_jis",
    "euc-jp",
    "iso-2022-jp",
    "koi8-r",
    "gb2312",
    "utf-8*en",  # RFC 2231: a language after the charset
]

_SAMPLES = {
    "utf-8": "Zoë 日本 🎉",
    "iso-8859-1": "Zoë Ünal",
    "latin-1": "Zoë Ünal",
    "iso-8859-15": "Zoë €",
    "windows-1252": "Zoë €",
    "utf-16": "Zoë 日本",
    "utf-16-be": "Zoë 日本",
    "utf-16-le": "Zoë 日本",
    "shift_jis": "日本語",
    "euc-jp": "日本語",
    "iso-2022-jp": "日本語",
    "koi8-r": "Жанна",
    "gb2312": "中文",
}
"""Non-ASCII text each charset can carry, mixed into the decoded text."""

SEPARATORS = [" ", "  ", "\t", "", "\r\n ", "\r\n\t", "\n "]
"""What stands between two encoded words: spaces, nothing, or a fold (the folds are line breaks
in the input, which the mailer refuses as such)."""

_Q_LITERAL = set((string.ascii_letters + string.digits + "!*+-/").encode())


def _codec(charset: str) -> str:
    return charset.split("*")[0].lower()


@st.composite
def _q_encoded(draw: st.DrawFn, data: bytes) -> str:
    """Q encoding: each byte as =XX (hex in either case) or as itself where that is allowed."""
    upper = draw(st.booleans())
    out = []
    for byte in data:
        if byte == 0x20 and draw(st.booleans()):
            out.append("_")
        elif byte in _Q_LITERAL and draw(st.booleans()):
            out.append(chr(byte))
        else:
            out.append(f"={byte:02X}" if upper else f"={byte:02x}")
    return "".join(out)


@st.composite
def _word(draw: st.DrawFn, charset: str, data: bytes) -> str:
    letter = draw(st.sampled_from("qQbB"))
    if letter in "qQ":
        text = draw(_q_encoded(data))
    else:
        text = base64.b64encode(data).decode("ascii")
        if draw(st.booleans()):
            text = text.rstrip("=")  # unpadded: decoders accept it
    return f"=?{charset}?{letter}?{text}?="


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """One or more encoded words whose decoded text holds an injection."""
    charset = draw(st.sampled_from(CHARSETS))
    codec = _codec(charset)
    plain = st.text(alphabet=string.ascii_letters + " ", max_size=6)
    sample = _SAMPLES.get(codec, "")
    extra = draw(st.sampled_from(["", sample])) if sample else ""
    decoded = draw(plain) + extra + draw(st.sampled_from(INJECTIONS)) + draw(plain)
    data = decoded.encode(codec)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=3)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if data[a:b]]
    words = [draw(_word(charset, piece)) for piece in pieces]
    out = words[0]
    for word in words[1:]:
        out += draw(st.sampled_from(SEPARATORS)) + word
    return out


def hostile_values() -> st.SearchStrategy[str]:
    """A value holding encoded words, alone or with text around them."""
    around = st.sampled_from(["", "Ada ", "Welcome ", "Zoë ", "x"])
    return st.tuples(around, encoded_words(), around.map(lambda text: text.strip())).map("".join)


CONTROL_CHARACTERS = set(map(chr, [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]))
"""Characters no header value may hold as such (the mailer and the contract refuse them)."""


def has_control_character(value: str) -> bool:
    """True when ``value`` holds a line break or another control character as such."""
    return any(char in CONTROL_CHARACTERS for char in value)
