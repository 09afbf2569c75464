"""Log lines a county's log store can keep: bounded, and never a token.

A token in a URL, a header echoed in an error or a traceback would give whoever reads the log
the room it opens; a request line of 64 KiB (an SDP body in an error) would flood it.
"""

from __future__ import annotations

import logging
import re

# Longest log line kept, tracebacks included; what is longer is cut with a note.
MAX_LINE = 2000
# A JWT: three base64url parts, the first of them the encoded `{"` of its header.
_TOKEN = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]+")


def bounded(text: str) -> str:
    """The text with tokens replaced and cut to MAX_LINE characters."""
    text = _TOKEN.sub("<token>", text)
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}… ({len(text) - MAX_LINE} more characters)"
    return text


class BoundedFormatter(logging.Formatter):
    """A formatter whose every record, traceback and all, goes through `bounded`."""

    def format(self, record: logging.LogRecord) -> str:
        return bounded(super().format(record))


def configure(level: int = logging.INFO) -> None:
    """The relay's logging: one bounded line per record on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(BoundedFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
