"""Seeded mutation of real SDP offers, and the counters that show what a relay leaked.

The mutator edits an offer as lines grouped by m-section, so an edit can aim at one section
(its mid, its candidates, its payload types) the way a broken client or a proxy would break
it. Every mutation returns a one-line description, and each case draws from its own
`random.Random(f"{seed}:{index}")`, so `seed` and a case's index reproduce it alone.

The counters read the process the relay runs in: peer and ICE connections still open (found
through the garbage collector), UDP sockets, asyncio tasks, file descriptors, threads, and
rooms that still have a session.
"""

from __future__ import annotations

import asyncio
import difflib
import gc
import logging
import os
import random
import sysconfig
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from aioice import Connection
from aiortc import RTCPeerConnection

from relay.registry import Registry

ROOT = Path(__file__).resolve().parent.parent

Edit = Callable[[bytes], bytes]


# the document


@dataclass
class Doc:
    """An SDP offer as editable lines: the session part, then one list per m-section."""

    session: list[str]
    media: list[list[str]]
    eol: str = "\r\n"
    edits: list[Edit] = field(default_factory=list)  # byte edits, applied once rendered

    @classmethod
    def parse(cls, text: str) -> Doc:
        session: list[str] = []
        media: list[list[str]] = []
        for line in text.splitlines():
            if line.startswith("m="):
                media.append([line])
            elif line:
                (media[-1] if media else session).append(line)
        return cls(session, media)

    def sections(self) -> list[list[str]]:
        return [self.session, *self.media]

    def render(self) -> bytes:
        text = "".join(line + self.eol for section in self.sections() for line in section)
        body = text.encode("utf-8")
        for edit in self.edits:
            body = edit(body)
        return body

    def section(self, rng: random.Random) -> list[str]:
        """A random m-section, or the session part when there is none."""
        return rng.choice(self.media) if self.media else self.session

    def line(self, rng: random.Random) -> tuple[list[str], int]:
        """A random line (section, index), every line equally likely."""
        spots = [(s, i) for s in self.sections() for i in range(len(s))]
        return rng.choice(spots) if spots else (self.session, -1)

    def where(self, prefix: str) -> list[tuple[list[str], int]]:
        """Every line that starts with `prefix`, anywhere."""
        return [(s, i) for s in self.sections() for i, ln in enumerate(s) if ln.startswith(prefix)]

    def drop(self, prefix: str, sections: list[list[str]] | None = None) -> int:
        """Remove every line starting with `prefix` (from `sections`, default all); how many."""
        removed = 0
        for section in self.sections() if sections is None else sections:
            kept = [ln for ln in section if not ln.startswith(prefix)]
            removed += len(section) - len(kept)
            section[:] = kept
        return removed

    def mids(self) -> list[str]:
        return [ln[6:] for s in self.media for ln in s if ln.startswith("a=mid:")]


def clip(text: str, limit: int = 60) -> str:
    """A line short enough for a case description."""
    return text if len(text) <= limit else f"{text[: limit - 15]}...({len(text)} chars)"


def head(section: list[str]) -> str:
    """A section named by its first word ("m=video"), for descriptions."""
    return section[0].split(" ")[0] if section else "an empty section"


def set_field(line: str, index: int, value: str) -> str:
    """The line with its whitespace-separated field `index` replaced (appended if absent)."""
    parts = line.split(" ")
    if index < len(parts):
        parts[index] = value
    else:
        parts.append(value)
    return " ".join(parts)


def rewrite(rng: random.Random, doc: Doc, prefix: str, change: Callable[[str], str]) -> str:
    """Replace one random line starting with `prefix` by `change(line)`; its description."""
    spots = doc.where(prefix)
    if not spots:
        return f"no {prefix} line to change"
    section, i = rng.choice(spots)
    before, section[i] = section[i], change(section[i])
    return f"{clip(before)} -> {clip(section[i])}"


def insert(rng: random.Random, section: list[str], line: str) -> None:
    """Put `line` somewhere after the section's first line."""
    section.insert(rng.randint(min(1, len(section)), len(section)), line)


Mutation = Callable[[random.Random, Doc], str]


# structure


def delete_line(rng: random.Random, doc: Doc) -> str:
    section, i = doc.line(rng)
    return f"delete {clip(section.pop(i))}" if i >= 0 else "delete: nothing left"


def duplicate_line(rng: random.Random, doc: Doc) -> str:
    section, i = doc.line(rng)
    if i < 0:
        return "duplicate: nothing left"
    section.insert(i + 1, section[i])
    return f"duplicate {clip(section[i])}"


def shuffle_section(rng: random.Random, doc: Doc) -> str:
    section = doc.section(rng)
    rest = section[1:]
    rng.shuffle(rest)
    section[1:] = rest
    return f"shuffle the lines of {head(section)}"


def swap_sections(rng: random.Random, doc: Doc) -> str:
    if len(doc.media) < 2:
        doc.media.reverse()
        return "swap m-sections: fewer than two"
    i, j = rng.sample(range(len(doc.media)), 2)
    doc.media[i], doc.media[j] = doc.media[j], doc.media[i]
    return f"swap m-sections {i} and {j}"


def many_mlines(rng: random.Random, doc: Doc) -> str:
    """Copy one m-section many times, with fresh mids or the same one, in BUNDLE or not."""
    if not doc.media:
        return "many m-lines: none to copy"
    source = rng.choice(doc.media)
    copies = rng.choice((2, 4, 16, 40))
    fresh, bundle = rng.random() < 0.7, rng.random() < 0.5
    for n in range(copies):
        mid = f"x{n}" if fresh else None
        doc.media.append(
            [f"a=mid:{mid}" if mid and ln.startswith("a=mid:") else ln for ln in source]
        )
        if mid and bundle:
            doc.session[:] = [
                ln + f" {mid}" if ln.startswith("a=group:") else ln for ln in doc.session
            ]
    how = ("fresh mids" if fresh else "the same mid") + (", bundled" if bundle and fresh else "")
    return f"{copies} more copies of {head(source)} with {how}"


def wrong_kind(rng: random.Random, doc: Doc) -> str:
    datachannel = ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0"]
    datachannel += ["a=mid:dc", "a=sctp-port:5000", "a=max-message-size:65536"]
    choice = rng.randrange(3)
    if choice == 0 or not doc.media:
        doc.media.append(datachannel)
        return "append a data channel m-section"
    if choice == 1:
        i = rng.randrange(len(doc.media))
        doc.media[i] = datachannel + doc.media[i][1:]
        return f"m-section {i} becomes a data channel"
    kind = rng.choice(("application", "text", "message", "image", "", "AUDIO"))
    return rewrite(rng, doc, "m=", lambda ln: f"m={kind} " + ln.partition(" ")[2])


def session_lines(rng: random.Random, doc: Doc) -> str:
    changes: dict[str, Callable[[], object]] = {
        "drop v=": lambda: doc.drop("v="),
        "v=1": lambda: doc.session.__setitem__(0, "v=1"),
        "drop o=": lambda: doc.drop("o="),
        "drop s= and t=": lambda: (doc.drop("s="), doc.drop("t=")),
        "o= with two fields": lambda: doc.session.__setitem__(1, "o=- 1"),
        "junk before v=0": lambda: doc.session.insert(0, "hello"),
        "unknown x= line": lambda: doc.session.insert(2, "x=unknown"),
        "session-level a=inactive": lambda: doc.session.append("a=inactive"),
    }
    name = rng.choice(list(changes))
    changes[name]()
    return name


# identifiers and directions


def mid(rng: random.Random, doc: Doc) -> str:
    others = doc.mids() or ["0"]
    value = rng.choice(("", "x", "0 1", "中文", "m" * 300, rng.choice(others), None))
    if value is None:
        section = doc.section(rng)
        return f"remove a=mid from {head(section)}: {doc.drop('a=mid:', [section])} line(s)"
    return rewrite(rng, doc, "a=mid:", lambda _: f"a=mid:{value}")


def bundle(rng: random.Random, doc: Doc) -> str:
    mids = doc.mids()
    values = {
        "remove": None,
        "empty": "a=group:BUNDLE",
        "wrong mids": "a=group:BUNDLE 7 8",
        "extra mids": "a=group:BUNDLE " + " ".join([*mids, "9", "10"]),
        "first only": "a=group:BUNDLE " + " ".join(mids[:1]),
        "duplicated mid": "a=group:BUNDLE " + " ".join(mids[:1] * 3),
        "other semantics": "a=group:LS " + " ".join(mids),
        "lowercase": "a=group:bundle " + " ".join(mids),
    }
    name = rng.choice(list(values))
    doc.drop("a=group:", [doc.session])
    line = values[name]
    if line is not None:
        doc.session.insert(min(4, len(doc.session)), line)
    return f"BUNDLE group: {name}"


DIRECTIONS = ("sendonly", "recvonly", "sendrecv", "inactive")


def direction(rng: random.Random, doc: Doc) -> str:
    section = doc.section(rng)
    present = [i for i, ln in enumerate(section) if ln[2:] in DIRECTIONS]
    new = rng.choice(DIRECTIONS)
    how = rng.randrange(3)
    if how == 0 and present:
        section.pop(present[0])
        return f"remove the direction of {head(section)}"
    if how == 1 or not present:
        insert(rng, section, f"a={new}")
        return f"add a second direction a={new}"
    before, section[present[0]] = section[present[0]], f"a={new}"
    return f"{before} -> a={new}"


# numbers


def _payload_type(rng: random.Random, doc: Doc) -> str:
    section = doc.section(rng)
    if not section or not section[0].startswith("m=") or len(section[0].split()) < 4:
        return "payload type: no m-line"
    old = rng.choice(section[0].split()[3:])
    new = rng.choice(("300", "128", "-1", "99999999999", "x"))
    everywhere = rng.random() < 0.5
    section[0] = " ".join(new if f == old else f for f in section[0].split())
    if everywhere:
        for i, ln in enumerate(section):
            for attr in ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"):
                if ln.startswith(f"{attr}{old} "):
                    section[i] = f"{attr}{new} " + ln.partition(" ")[2]
    return f"payload type {old} -> {new}" + (" everywhere" if everywhere else " in the m-line only")


def _rtpmap(rng: random.Random, doc: Doc, part: int) -> str:
    value = rng.choice(("0", "-1", "300", "99999999999", ""))

    def change(line: str) -> str:
        head, _, codec = line.partition(" ")
        bits = codec.split("/")
        if part < len(bits):
            bits[part] = value
        else:
            bits.append(value)
        return f"{head} {'/'.join(bits)}"

    return rewrite(rng, doc, "a=rtpmap:", change)


def _prefixed_number(rng: random.Random, doc: Doc, prefix: str) -> str:
    """`prefix` followed by a number: that number becomes absurd."""
    value = rng.choice((str(2**40), "99999999999", "-1", "4294967296", "0"))
    return rewrite(rng, doc, prefix, lambda ln: prefix + value + " " + ln.partition(" ")[2])


def _bandwidth(rng: random.Random, doc: Doc) -> str:
    line = rng.choice(("b=AS:99999999999", "b=TIAS:-1", "b=AS:x", "b=CT:0"))
    insert(rng, doc.section(rng), line)
    return f"insert {line}"


HUGE_NUMBERS: dict[str, Mutation] = {
    "m-line port": lambda rng, doc: rewrite(
        rng, doc, "m=", lambda ln: set_field(ln, 1, rng.choice(("65536", "99999999999", "-1", "0")))
    ),
    "payload type": _payload_type,
    "clock rate": lambda rng, doc: _rtpmap(rng, doc, 1),
    "channels": lambda rng, doc: _rtpmap(rng, doc, 2),
    "ssrc": lambda rng, doc: _prefixed_number(rng, doc, "a=ssrc:"),
    "ssrc-group": lambda rng, doc: rewrite(
        rng, doc, "a=ssrc-group:", lambda ln: set_field(ln, 1, str(2**40))
    ),
    "extmap id": lambda rng, doc: rewrite(
        rng,
        doc,
        "a=extmap:",
        lambda ln: "a=extmap:" + rng.choice(("0", "300", "-1")) + " " + ln.partition(" ")[2],
    ),
    "rtcp port": lambda rng, doc: rewrite(
        rng, doc, "a=rtcp:", lambda ln: set_field(ln, 0, "a=rtcp:99999999999")
    ),
    "rtx apt": lambda rng, doc: rewrite(
        rng, doc, "a=fmtp:", lambda ln: set_field(ln, 1, "apt=300")
    ),
    "bandwidth": _bandwidth,
    "o= version": lambda rng, doc: rewrite(rng, doc, "o=", lambda ln: set_field(ln, 2, "9" * 40)),
}


def huge_number(rng: random.Random, doc: Doc) -> str:
    name = rng.choice(list(HUGE_NUMBERS))
    return f"{name}: {HUGE_NUMBERS[name](rng, doc)}"


# transport: candidates, ICE, DTLS


BOGUS_ADDRESSES = (
    "999.1.1.1",
    "bogus.invalid",
    "::g",
    "0.0.0.0",
    "255.255.255.255",
    "fe80::1%eth0",
    "abcdef.local",
    "",
)


def _candidate_field(rng: random.Random, doc: Doc, index: int, values: tuple[str, ...]) -> str:
    value = rng.choice(values)
    if rng.random() < 0.5:
        return rewrite(rng, doc, "a=candidate:", lambda ln: set_field(ln, index, value))
    for section, i in doc.where("a=candidate:"):
        section[i] = set_field(section[i], index, value)
    return f"every candidate's field {index} -> {value!r}"


def _candidate_flood(rng: random.Random, doc: Doc) -> str:
    spots = doc.where("a=candidate:")
    if not spots:
        return "no candidate to flood"
    section, i = spots[0]
    section[i + 1 : i + 1] = [set_field(section[i], 5, str(20000 + n)) for n in range(200)]
    return "200 more candidates in the first section"


CANDIDATES: dict[str, Mutation] = {
    "only in the first m-section": lambda rng, doc: str(
        doc.drop("a=candidate:", doc.media[1:]) + doc.drop("a=end-of-candidates", doc.media[1:])
    ),
    "removed entirely": lambda rng, doc: str(doc.drop("a=candidate:") + doc.drop("a=end-")),
    "port": lambda rng, doc: _candidate_field(rng, doc, 5, ("65536", "99999999999", "-1", "0")),
    "bogus address": lambda rng, doc: _candidate_field(rng, doc, 4, BOGUS_ADDRESSES),
    "priority": lambda rng, doc: _candidate_field(rng, doc, 3, ("99999999999", "-1", "x")),
    "component": lambda rng, doc: _candidate_field(rng, doc, 1, ("0", "2", "300")),
    "transport": lambda rng, doc: _candidate_field(rng, doc, 2, ("tcp", "sctp", "UDP", "")),
    "type": lambda rng, doc: _candidate_field(rng, doc, 7, ("relay", "srflx", "bogus", "")),
    "truncated": lambda rng, doc: rewrite(
        rng, doc, "a=candidate:", lambda ln: " ".join(ln.split()[: rng.randint(1, 7)])
    ),
    "flooded": _candidate_flood,
}


def candidates(rng: random.Random, doc: Doc) -> str:
    name = rng.choice(list(CANDIDATES))
    return f"candidates {name}: {CANDIDATES[name](rng, doc)}"


def _ice_remove(rng: random.Random, doc: Doc) -> str:
    what = rng.choice(("a=ice-ufrag:", "a=ice-pwd:", "a=ice-"))
    scope = [doc.section(rng)] if rng.random() < 0.5 else None
    return f"remove {what} from {'one section' if scope else 'everywhere'}: {doc.drop(what, scope)}"


ICE: dict[str, Mutation] = {
    "removed": _ice_remove,
    "empty ufrag": lambda rng, doc: rewrite(rng, doc, "a=ice-ufrag:", lambda _: "a=ice-ufrag:"),
    "short pwd": lambda rng, doc: rewrite(rng, doc, "a=ice-pwd:", lambda _: "a=ice-pwd:x"),
    "ufrag differs per section": lambda rng, doc: rewrite(
        rng, doc, "a=ice-ufrag:", lambda _: "a=ice-ufrag:" + rng.choice(("zzzz", "y" * 300))
    ),
    "moved to session level": lambda rng, doc: _ice_to_session(doc),
}


def _ice_to_session(doc: Doc) -> str:
    lines = [ln for s in doc.media[:1] for ln in s if ln.startswith("a=ice-")]
    doc.drop("a=ice-", doc.media)
    doc.session.extend(lines)
    return f"{len(lines)} line(s)"


def ice_credentials(rng: random.Random, doc: Doc) -> str:
    name = rng.choice(list(ICE))
    return f"ICE credentials {name}: {ICE[name](rng, doc)}"


def fingerprint(rng: random.Random, doc: Doc) -> str:
    how = rng.randrange(6)
    if how < 2:
        scope = [doc.section(rng)] if how == 0 else None
        where = "one section" if scope else "everywhere"
        return f"remove DTLS fingerprints from {where}: {doc.drop('a=fingerprint:', scope)}"
    values = (
        "sha-256 ZZ:" + "00:" * 30 + "00",
        "sha-256 AB:CD",
        "md5 00:11",
        "foo bar",
        "sha-256",
        "",
    )
    value = values[how - 2 + rng.randrange(3)]
    return rewrite(rng, doc, "a=fingerprint:", lambda _: f"a=fingerprint:{value}")


def setup(rng: random.Random, doc: Doc) -> str:
    value = rng.choice(("", "bogus", "holdconn", "active", "passive", "actpass actpass", None))
    if value is None:
        return f"remove a=setup: {doc.drop('a=setup:')} line(s)"
    return rewrite(rng, doc, "a=setup:", lambda _: f"a=setup:{value}")


def rtcp_mux(rng: random.Random, doc: Doc) -> str:
    if rng.random() < 0.5:
        return f"remove a=rtcp-mux: {doc.drop('a=rtcp-mux', [doc.section(rng)])} line(s)"
    insert(rng, doc.section(rng), "a=rtcp-mux-only")
    return "add a=rtcp-mux-only"


def profile(rng: random.Random, doc: Doc) -> str:
    value = rng.choice(("RTP/AVP", "TCP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/DTLS/SCTP", ""))
    return rewrite(rng, doc, "m=", lambda ln: set_field(ln, 2, value))


def connection_line(rng: random.Random, doc: Doc) -> str:
    value = rng.choice(("c=IN IP4", "c=IN IP6 ::1", "c=IN IP4 999.1.1.1", "c=XX", None))
    if value is None:
        return f"remove c= lines: {doc.drop('c=')}"
    return rewrite(rng, doc, "c=", lambda _: value)


# codecs and attributes


def codecs(rng: random.Random, doc: Doc) -> str:
    choice = rng.randrange(5)
    if choice == 0:
        codec = rng.choice(("opus/", "VP8/"))
        return f"remove the {codec} rtpmap: {_drop_rtpmap(doc, codec)}"
    lines = (
        "a=rtpmap:97 VP8",
        "a=rtcp-fb:* nack",
        "a=fmtp:99 profile-level-id=zz",
        "a=fmtp:97 ;;;==",
    )
    line = lines[choice - 1]
    insert(rng, doc.section(rng), line)
    return f"insert {line}"


def _drop_rtpmap(doc: Doc, codec: str) -> str:
    removed = 0
    for section in doc.media:
        kept = [ln for ln in section if not (ln.startswith("a=rtpmap:") and f" {codec}" in ln)]
        removed += len(section) - len(kept)
        section[:] = kept
    return f"{removed} line(s)"


MALFORMED = (
    "a=rtpmap:",
    "a=rtpmap:97",
    "a=ssrc:",
    "a=ssrc:1",
    "a=candidate:",
    "a=extmap:",
    "a=extmap:x y",
    "a=rtcp-fb:",
    "a=msid:",
    "a=fmtp:",
    "a=fmtp:x",
    "a=ssrc-group:FID",
    "a=ssrc-group:FID x",
    "a=rtcp:",
    "a=rtcp:x",
    "a=mid:",
    "a=sctp-port:x",
    "a=max-message-size:x",
    "a=group:",
    "a=",
    "=",
    "a",
    "m=",
    "m=video",
    "c=",
    "a=setup",
    "a=fingerprint",
    "a=rid:",
    "a=simulcast:",
)


def malformed_attr(rng: random.Random, doc: Doc) -> str:
    line = rng.choice(MALFORMED)
    insert(rng, doc.section(rng), line)
    return f"insert {line!r}"


# bytes and lines


def _truncate(rng: random.Random, doc: Doc) -> str:
    fraction = rng.random()
    doc.edits.append(lambda body: body[: int(len(body) * fraction)])
    return f"truncate to {fraction:.0%} of the body"


NON_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\x80\x80",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
)


def non_utf8(rng: random.Random, doc: Doc) -> str:
    junk, where = rng.choice(NON_UTF8), rng.random()
    doc.edits.append(
        lambda body: body[: int(len(body) * where)] + junk + body[int(len(body) * where) :]
    )
    return f"insert {junk!r} at {where:.0%} of the body"


def long_line(rng: random.Random, doc: Doc) -> str:
    size = rng.choice((1000, 10_000, 60_000, 70_000))
    how = rng.randrange(4)
    if how == 0:
        insert(rng, doc.section(rng), "a=x-long:" + "A" * size)
        return f"insert a {size}-char attribute"
    if how == 1:
        return rewrite(rng, doc, "a=msid:", lambda ln: ln + "x" * size)
    if how == 2:
        return rewrite(rng, doc, "m=", lambda ln: ln + " 96" * (size // 3))
    return rewrite(rng, doc, "a=rtpmap:", lambda ln: ln.replace("/", "X" * size + "/", 1))


def line_endings(rng: random.Random, doc: Doc) -> str:
    how = rng.randrange(6)
    if how < 2:
        doc.eol = ("\n", "\r")[how]
        return f"line endings {doc.eol!r}"
    if how == 2:
        doc.edits.append(lambda body: body.replace(b"\r\n", b"\n", body.count(b"\r\n") // 2))
        return "half the CRLFs become LF"
    if how == 3:
        section = doc.section(rng)
        insert(rng, section, "")
        return "insert an empty line"
    if how == 4:
        return rewrite(rng, doc, "a=", lambda ln: ln + rng.choice(("  ", "\t", " \x0b")))
    return rewrite(rng, doc, "a=", lambda ln: ln[:2] + "\x00" + ln[2:])


MUTATIONS: dict[str, Mutation] = {
    "delete line": delete_line,
    "duplicate line": duplicate_line,
    "shuffle m-section": shuffle_section,
    "swap m-sections": swap_sections,
    "many m-lines": many_mlines,
    "wrong m= kind": wrong_kind,
    "session lines": session_lines,
    "mid": mid,
    "BUNDLE": bundle,
    "direction": direction,
    "huge number": huge_number,
    "candidates": candidates,
    "ICE credentials": ice_credentials,
    "DTLS fingerprint": fingerprint,
    "a=setup": setup,
    "rtcp-mux": rtcp_mux,
    "transport profile": profile,
    "c= line": connection_line,
    "codecs": codecs,
    "malformed attribute": malformed_attr,
    "truncate": _truncate,
    "non-UTF-8 bytes": non_utf8,
    "long line": long_line,
    "line endings": line_endings,
}


# cases


@dataclass(frozen=True, slots=True)
class Seed:
    """A real offer a case starts from, and the endpoint it was made for."""

    name: str
    endpoint: str  # "whip" or "whep"
    text: str

    def attribute(self, name: str) -> str:
        """The first value of `a=<name>:` in the offer, "" when absent."""
        prefix = f"a={name}:"
        return next(
            (ln[len(prefix) :] for ln in self.text.splitlines() if ln.startswith(prefix)), ""
        )


@dataclass(frozen=True, slots=True)
class Case:
    """One POST of a mutated offer and what to try on its Location if it gets a 201."""

    index: int
    seed: Seed
    mutations: tuple[str, ...]
    body: bytes
    follow_up: tuple[str, ...]  # "delete" or "patch:<fragment>", in order; the last is a DELETE

    @property
    def room(self) -> str:
        # fixed width, so "/fuzz-000012" never matches inside the path of case 120
        return f"fuzz-{self.index:06d}"

    def describe(self) -> str:
        return f"case {self.index} ({self.seed.name} -> {self.seed.endpoint}): " + "; ".join(
            f"[{m}]" for m in self.mutations
        )

    def diff(self, limit: int = 20) -> str:
        """The body against its seed, as a unified diff of at most `limit` lines."""
        body = self.body.decode("utf-8", "backslashreplace").splitlines()
        lines = list(difflib.unified_diff(self.seed.text.splitlines(), body, lineterm="", n=0))
        shown = [clip(ln, 160) for ln in lines[2 : 2 + limit]]
        return "\n".join(
            shown + ([f"... {len(lines) - 2 - limit} more"] if len(lines) > 2 + limit else [])
        )


FOLLOW_UPS = (
    ("delete",),
    ("delete",),
    ("delete", "delete"),
    ("patch", "delete"),
    ("patch", "patch", "delete"),
    ("delete", "patch"),
)

FRAGMENTS = ("candidate", "end", "wrong-ufrag", "restart", "port-65536", "empty", "garbage")


def make_case(seed_text: str, index: int, seeds: list[Seed]) -> Case:
    """Case `index` of the run seeded `seed_text`: 1-3 mutations of one real offer."""
    rng = random.Random(f"{seed_text}:{index}")
    seed = rng.choice(seeds)
    doc = Doc.parse(seed.text)
    names = [rng.choice(list(MUTATIONS)) for _ in range(rng.randint(1, 3))]
    mutations = tuple(f"{name}: {MUTATIONS[name](rng, doc)}" for name in names)
    steps = tuple(
        f"patch:{rng.choice(FRAGMENTS)}" if step == "patch" else step
        for step in rng.choice(FOLLOW_UPS)
    )
    if steps[-1] != "delete":
        steps = (*steps, "delete")  # every session the relay accepted is ended again
    return Case(index, seed, mutations, doc.render(), steps)


def trickle_fragment(kind: str, seed: Seed) -> bytes:
    """An application/trickle-ice-sdpfrag body (RFC 8840) for PATCH."""
    ufrag, pwd = seed.attribute("ice-ufrag"), seed.attribute("ice-pwd")
    candidate = seed.attribute("candidate")
    if kind == "wrong-ufrag":
        ufrag = "nope"
    elif kind == "restart":
        ufrag, pwd = "rstr", "restartrestartrestart12"
    elif kind == "port-65536":
        candidate = set_field(candidate, 5, "65536")
    body = {
        "empty": "",
        "garbage": "\xff\x00 not a fragment",
        "end": f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=end-of-candidates\r\n",
    }.get(kind)
    if body is None:
        body = f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
        body += f"a=mid:0\r\na=candidate:{candidate}\r\n"
    return body.encode("utf-8", "surrogateescape")


# what the relay logs


class ErrorLog(logging.Handler):
    """Every ERROR record any logger emits while installed, to match records with cases: by
    the room in a request's path, else by the relay objects a case's session owns."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._owners: dict[int, int] = {}  # id() of a session's object -> case index
        self._tags: dict[str, int] = {}  # how a log message names such an object -> case

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self, needle: str) -> list[logging.LogRecord]:
        """Remove and return the records whose message contains `needle`."""
        mine = [r for r in self.records if needle in r.getMessage()]
        self.records = [r for r in self.records if r not in mine]
        return mine

    def own(self, case: int, session_id: str, pc: object) -> None:
        """Errors naming this session, or about its peer connection, ICE connection or
        sockets, are `case`'s."""
        self._tags[session_id] = case
        for part in session_parts(pc):
            self._owners[id(part)] = case
            self._tags[f"protocol: {part!r}\n"] = case

    def owner(self, record: logging.LogRecord) -> int | None:
        """The case whose session a record is about, if a frame or the message names it."""
        error = record.exc_info[1] if record.exc_info else None
        tb = error.__traceback__ if error is not None else None
        while tb is not None:
            case = self._owners.get(id(tb.tb_frame.f_locals.get("self")))
            if case is not None:
                return case
            tb = tb.tb_next
        message = record.getMessage()
        return next((case for tag, case in self._tags.items() if tag in message), None)

    def __enter__(self) -> ErrorLog:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger().removeHandler(self)


def session_parts(pc: object) -> list[object]:
    """A relay peer connection, its ICE connection and that one's sockets' protocols, as far
    as aiortc 1.16 and aioice 0.13 let them be reached (private names: best effort)."""
    parts: list[object] = [pc]
    for transceiver in getattr(pc, "getTransceivers", list)():
        ice = getattr(getattr(transceiver.receiver, "transport", None), "transport", None)
        connection = getattr(getattr(ice, "iceGatherer", None), "_connection", None)
        if connection is not None and connection not in parts:
            parts += [connection, *getattr(connection, "_protocols", [])]
    return parts


def where(frame: traceback.FrameSummary) -> str:
    """A frame as file:line (function), the file relative to the project, site-packages or
    the standard library."""
    path = frame.filename
    if "site-packages/" in path:
        path = path.split("site-packages/")[-1]
    for base in (str(ROOT), sysconfig.get_paths()["stdlib"]):
        if path.startswith(base + "/"):
            path = path[len(base) + 1 :]
    return f"{path}:{frame.lineno} ({frame.name})"


def cause(record: logging.LogRecord) -> tuple[str, str]:
    """(group key, sample text) of a logged error: the exception, where it was raised and
    the last frame of ours it passed through."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return record.getMessage(), record.getMessage()
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename]
    origin = where(frames[-1]) if frames else "?"
    via = where(ours[-1]) if ours else "?"
    key = f"{type(error).__name__} raised at {origin}, via {via}"
    return key, f"{type(error).__name__}: {clip(str(error), 200)}"


# leak accounting


@dataclass(frozen=True, slots=True)
class Resources:
    """What a leaked session keeps in the process; compare one taken after with a baseline."""

    peer_connections: int  # RTCPeerConnections whose connectionState is not "closed"
    ice_connections: int  # aioice Connections not closed
    udp_sockets: int
    tasks: int  # asyncio tasks, this test's own included
    fds: int
    threads: int  # except the default executor's workers, which idle until the loop closes
    busy_rooms: int  # rooms with a publisher or a player
    # Every RTCPeerConnection still reachable, closed or not (reported only): a logged
    # traceback keeps the frames of a failed negotiation, and with them its peer.
    peer_objects: int

    def excess(self, baseline: Resources) -> dict[str, tuple[int, int]]:
        """Each counter above its baseline: name -> (baseline, now)."""
        return {
            f.name: (getattr(baseline, f.name), getattr(self, f.name))
            for f in fields(self)
            if f.name != "peer_objects" and getattr(self, f.name) > getattr(baseline, f.name)
        }

    def table(self, baseline: Resources) -> str:
        rows = [(f.name, getattr(baseline, f.name), getattr(self, f.name)) for f in fields(self)]
        return "\n".join(f"  {name:<17} baseline {b:>5}  after {a:>5}" for name, b, a in rows)


def _live(objects: list[object]) -> tuple[int, int, int]:
    """(open peer connections, all peer connections, open ICE connections) among objects."""
    peers = [o for o in objects if isinstance(o, RTCPeerConnection)]
    open_peers = sum(1 for p in peers if p.connectionState != "closed")
    ice = sum(1 for o in objects if isinstance(o, Connection) and not o._closed)
    return open_peers, len(peers), ice


def _udp_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("udp", "udp6"):
        with open(f"/proc/self/net/{table}", encoding="ascii") as f:
            inodes.update(line.split()[9] for line in list(f)[1:])
    return inodes


def _socket_inodes() -> Iterator[str]:
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since listdir
            continue
        if target.startswith("socket:["):
            yield target[8:-1]


def udp_sockets() -> int:
    """UDP sockets this process holds: its socket fds whose inode is in the UDP tables."""
    inodes = _udp_inodes()
    return sum(1 for inode in _socket_inodes() if inode in inodes)


def measure(registry: Registry) -> Resources:
    """The counters now, after a full garbage collection; call it inside the running loop."""
    gc.collect()
    open_peers, peers, ice = _live(gc.get_objects())
    busy = sum(1 for room in registry if room.publishers or room.players)
    workers = sum(1 for t in threading.enumerate() if t.name.startswith("asyncio_"))
    return Resources(
        peer_connections=open_peers,
        ice_connections=ice,
        udp_sockets=udp_sockets(),
        tasks=len(asyncio.all_tasks()),
        fds=len(os.listdir("/proc/self/fd")),
        threads=threading.active_count() - workers,
        busy_rooms=busy,
        peer_objects=peers,
    )


def task_names() -> Counter[str]:
    """The pending asyncio tasks by coroutine, to name what a task count above baseline is."""
    return Counter(getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks())


def open_peers() -> Counter[str]:
    """The RTCPeerConnections not closed, by "connectionState/signalingState"."""
    gc.collect()
    peers = [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection)]
    return Counter(
        f"{p.connectionState}/{p.signalingState}" for p in peers if p.connectionState != "closed"
    )


def histogram(counts: Counter[str]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in sorted(counts.items()))
