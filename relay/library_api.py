"""The course library over HTTP: the /library page, its JSON API and the lesson files.

Any valid Ketang token may browse, play and download (the library is shared across schools);
deleting takes an admin token. Files are served with HTTP Range (seeking in the player, resumed
downloads); only files a lesson's meta lists are served.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from recorder.library import Catalog, check_id
from relay.auth import Auth, may_manage
from relay.core.errors import Forbidden, KetangError, status_of
from relay.pages import Pages, error_page, page_html, private_html


def public(meta: dict[str, Any]) -> dict[str, Any]:
    """A lesson as the API shows it: the meta plus the URLs of its files."""
    base = f"/library/{meta['id']}"
    files = {source: f"{base}/{f['file']}" for source, f in meta.get("files", {}).items()}
    poster = f"{base}/{meta['poster']}" if meta.get("poster") else None
    return {**meta, "urls": files, "poster_url": poster}


def _empty_suffix(header: str) -> bool:
    """A Range asking for the last 0 bytes (`bytes=-0`), alone or in a list."""
    unit, _, ranges = header.partition("=")
    if unit.strip().lower() != "bytes":
        return False
    return any(
        r.strip().startswith("-") and r.strip()[1:].strip("0") == "" for r in ranges.split(",")
    )


class LibraryApi:
    """The library page, its JSON API and the lesson files."""

    def __init__(self, catalog: Catalog, auth: Auth, pages: Pages) -> None:
        self.catalog = catalog
        self._auth = auth
        self._pages = pages

    async def library_page(self, request: web.Request) -> web.Response:
        try:
            grant = self._auth.anyone(request)
        except KetangError as error:
            return error_page(*status_of(error))
        return private_html(page_html("library.html", self._pages.settings(grant, None)))

    async def lessons_api(self, request: web.Request) -> web.Response:
        """GET /api/library?q=…&since=YYYY-MM-DD&until=YYYY-MM-DD"""
        self._auth.anyone(request)
        query = request.query
        found = self.catalog.search(query.get("q", ""), query.get("since"), query.get("until"))
        return web.json_response({"lessons": [public(m) for m in found]})

    async def lesson_api(self, request: web.Request) -> web.Response:
        self._auth.anyone(request)
        return web.json_response(public(self.catalog.get(request.match_info["id"])))

    async def lesson_delete(self, request: web.Request) -> web.Response:
        """DELETE /api/library/{id}: admins only."""
        grant = self._auth.anyone(request)
        if grant.role != "admin":
            raise Forbidden("only an admin may delete lessons")
        lesson_id = request.match_info["id"]
        meta = self.catalog.get(lesson_id)  # 404 if unknown
        if not may_manage(grant, str(meta.get("room", ""))):
            raise Forbidden(f"this admin token is for room {grant.room!r}")
        self.catalog.remove(lesson_id)
        return web.json_response({"deleted": lesson_id})

    async def lesson_file(self, request: web.Request) -> web.StreamResponse:
        """A lesson's media or poster, with Range; `?download=1` saves it under a readable
        name."""
        self._auth.anyone(request)
        lesson_id = check_id(request.match_info["id"])
        path = self.catalog.store.path(lesson_id, request.match_info["name"])
        if _empty_suffix(request.headers.get("Range", "")):
            # RFC 9110 §14.1.1: a suffix of zero bytes is unsatisfiable (aiohttp sends it all)
            size = path.stat().st_size
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
        headers = {"Cache-Control": "private, max-age=3600"}
        if request.query.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="{lesson_id}-{path.name}"'
        return web.FileResponse(path, headers=headers)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/library", self.library_page),
            web.get("/api/library", self.lessons_api),
            web.get("/api/library/{id}", self.lesson_api),
            web.delete("/api/library/{id}", self.lesson_delete),
            web.get("/library/{id}/{name}", self.lesson_file),
        ]
