"""The browser pages and the admin JSON API behind them.

Pages live in web/ as plain HTML and JS modules (no build step). A page URL carries its token
(`/class/{room}?token=…`); the relay checks it before serving, so a wrong or expired link gets
a clear bilingual page with the reason, never a broken app or a stack trace. The checked facts
(room, role, name) are written into the page as JSON for its script.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from relay.auth import Auth, may_manage
from relay.config import Config, base_url
from relay.core.errors import BadRequest, Forbidden, KetangError, status_of
from relay.events import EventHub, finite
from relay.registry import Registry
from relay.signalling import client_ice_servers
from relay.tokens import Grant, issue, validate_room

WEB = Path(__file__).resolve().parent.parent / "web"
# Longest link lifetime the admin form offers: a school term.
MAX_LINK_HOURS = 24 * 120
MAX_CLASSROOMS_PER_FORM = 200

_ERRORS = {
    401: ("链接无效或已过期", "This link is not valid or has expired"),
    403: ("此链接不能打开这个页面", "This link does not open this page"),
    400: ("链接格式有误", "This link is malformed"),
}


def page_html(name: str, config: dict[str, Any]) -> str:
    """A page from web/ with its config embedded (escaped so it cannot end the script)."""
    blob = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c")
    return (WEB / name).read_text(encoding="utf-8").replace("{{CONFIG}}", blob)


def error_page(status: int, reason: str) -> web.Response:
    """A readable page for a link that does not work, in Chinese and English."""
    zh, en = _ERRORS.get(status, ("出错了", "Something went wrong"))
    body = (WEB / "error.html").read_text(encoding="utf-8")
    for key, value in (
        ("{{STATUS}}", str(status)),
        ("{{ZH}}", zh),
        ("{{EN}}", en),
        ("{{REASON}}", html.escape(reason)),
    ):
        body = body.replace(key, value)
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8")


def private_html(text: str) -> web.Response:
    # pages hold tokens in their URL: keep them out of other sites' Referer headers
    headers = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)


def _name(raw: object, what: str) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 80:
        raise BadRequest(f"each {what} name must be 1 to 80 characters")
    return raw.strip()


class Pages:
    """The pages and the admin API of one relay process."""

    def __init__(self, config: Config, auth: Auth, secret: bytes, hub: EventHub) -> None:
        self._config = config
        self._auth = auth
        self._secret = secret
        self._hub = hub

    @property
    def _registry(self) -> Registry:
        return self._hub.registry

    def settings(self, grant: Grant, room: str | None) -> dict[str, Any]:
        """What a page's script is told about its viewer."""
        servers = client_ice_servers(self._config.ice, grant.name, time.time())
        return {
            "room": room,
            "role": grant.role,
            "name": grant.name,
            "grafana": self._config.metrics.grafana_url,
            # before the page builds its RTCPeerConnection: TURN only works if it is there
            "iceServers": [
                {"urls": s.url, "username": s.username, "credential": s.credential}
                if s.username is not None
                else {"urls": s.url}
                for s in servers
            ],
        }

    async def _room_page(self, request: web.Request, template: str, role: str) -> web.Response:
        try:
            room = validate_room(request.match_info["room"])
            grant = self._auth.room(request, room, {role})
        except KetangError as error:
            return error_page(*status_of(error))
        return private_html(page_html(template, self.settings(grant, room)))

    async def teach_page(self, request: web.Request) -> web.Response:
        """The teacher studio."""
        return await self._room_page(request, "teach.html", "teacher")

    async def class_page(self, request: web.Request) -> web.Response:
        """The classroom projector player."""
        return await self._room_page(request, "class.html", "classroom")

    async def admin_page(self, request: web.Request) -> web.Response:
        """The county bureau's overview of live rooms."""
        try:
            grant = self._auth.admin(request)
        except KetangError as error:
            return error_page(*status_of(error))
        return private_html(page_html("admin.html", self.settings(grant, None)))

    async def landing_page(self, request: web.Request) -> web.Response:
        return private_html((WEB / "index.html").read_text(encoding="utf-8"))

    async def rooms_api(self, request: web.Request) -> web.Response:
        """GET /api/rooms: every live room this admin may see, as the pages' state."""
        grant = self._auth.admin(request)
        names = {r.name for r in self._registry if r.active}
        if self._hub.remote is not None:  # a cluster node: the rooms of the other nodes too
            names |= self._hub.remote.rooms()
        rooms = [self._hub.state(name) for name in sorted(names) if may_manage(grant, name)]
        return web.json_response({"rooms": rooms})

    async def links_api(self, request: web.Request) -> web.Response:
        """POST /api/links: signed teacher and classroom links for one room."""
        grant = self._auth.admin(request)
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            raise BadRequest("body must be JSON (and not nested deeply)") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        room = validate_room(str(body.get("room", "")))
        if not may_manage(grant, room):
            raise Forbidden(f"this admin token is for room {grant.room!r}")
        teacher = _name(body.get("teacher", "teacher"), "teacher")
        names = body.get("classrooms", [])
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_CLASSROOMS_PER_FORM:
            raise BadRequest(f"classrooms must list 1 to {MAX_CLASSROOMS_PER_FORM} names")
        hours = body.get("hours", 12)
        if not finite(hours) or not 0 < hours <= MAX_LINK_HOURS:
            raise BadRequest(f"hours must be a number from 0 to {MAX_LINK_HOURS}")
        base = base_url(self._config.server)  # never the request's Host: a client sets that
        ttl = hours * 3600

        def link(path: str, role: str, name: str) -> dict[str, str]:
            token = issue(self._secret, room, role, name, ttl)
            return {"name": name, "url": f"{base}/{path}/{room}?token={token}"}

        return web.json_response({
            "room": room,
            "teacher": link("teach", "teacher", teacher),
            "classrooms": [link("class", "classroom", _name(n, "classroom")) for n in names],
        })  # fmt: skip

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/", self.landing_page),
            web.get("/teach/{room}", self.teach_page),
            web.get("/class/{room}", self.class_page),
            web.get("/admin", self.admin_page),
            web.get("/api/rooms", self.rooms_api),
            web.post("/api/links", self.links_api),
            web.static("/static/", WEB, follow_symlinks=False),
        ]
