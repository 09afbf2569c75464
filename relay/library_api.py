"""The course library over HTTP: the /library page, its JSON API and the lesson files.

Any valid Ketang token may browse, play and download (the library is shared across schools);
deleting takes an admin token. Files are served with HTTP Range (seeking in the player, resumed
downloads); only files a lesson's meta lists are served.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from recorder.library import Catalog, LocalStore, check_id
from recorder.recorder import Recorder
from relay.context import CTX, Context
from relay.errors import Forbidden, KetangError, status_of
from relay.events import HUB, request_token
from relay.pages import error_page, page_html, page_settings, private_html
from relay.tokens import Grant, read

CATALOG = web.AppKey("ketang-catalog", Catalog)
RECORDER = web.AppKey("ketang-recorder", Recorder)


def reader(request: web.Request) -> Grant:
    """Any valid token: teachers, classrooms and admins of every room share the library."""
    ctx: Context = request.app[CTX]
    return read(ctx.secret, request_token(request))


def public(meta: dict[str, Any]) -> dict[str, Any]:
    """A lesson as the API shows it: the meta plus the URLs of its files."""
    base = f"/library/{meta['id']}"
    files = {source: f"{base}/{f['file']}" for source, f in meta.get("files", {}).items()}
    poster = f"{base}/{meta['poster']}" if meta.get("poster") else None
    return {**meta, "urls": files, "poster_url": poster}


async def library_page(request: web.Request) -> web.Response:
    try:
        grant = reader(request)
    except KetangError as error:
        return error_page(*status_of(error))
    return private_html(page_html("library.html", page_settings(request, grant, None)))


async def lessons_api(request: web.Request) -> web.Response:
    """GET /api/library?q=…&since=YYYY-MM-DD&until=YYYY-MM-DD"""
    reader(request)
    query = request.query
    found = request.app[CATALOG].search(query.get("q", ""), query.get("since"), query.get("until"))
    return web.json_response({"lessons": [public(m) for m in found]})


async def lesson_api(request: web.Request) -> web.Response:
    reader(request)
    return web.json_response(public(request.app[CATALOG].get(request.match_info["id"])))


async def lesson_delete(request: web.Request) -> web.Response:
    """DELETE /api/library/{id}: admins only."""
    if reader(request).role != "admin":
        raise Forbidden("only an admin may delete lessons")
    catalog = request.app[CATALOG]
    catalog.get(request.match_info["id"])  # 404 if unknown
    catalog.remove(request.match_info["id"])
    return web.json_response({"deleted": request.match_info["id"]})


async def lesson_file(request: web.Request) -> web.StreamResponse:
    """A lesson's media or poster, with Range; `?download=1` saves it under a readable name."""
    reader(request)
    catalog = request.app[CATALOG]
    lesson_id = check_id(request.match_info["id"])
    path = catalog.store.path(lesson_id, request.match_info["name"])
    headers = {"Cache-Control": "private, max-age=3600"}
    if request.query.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{lesson_id}-{path.name}"'
    return web.FileResponse(path, headers=headers)


def add_routes(app: web.Application) -> None:
    """The library routes, its catalog and the recorder that fills it."""
    ctx: Context = app[CTX]
    catalog = Catalog(LocalStore(ctx.config.storage.data_dir / "library"))
    app[CATALOG] = catalog
    hub = app[HUB]

    def lesson_info(room: str) -> dict[str, str]:
        return asdict(hub.lesson(room))

    app[RECORDER] = Recorder(
        ctx.config.recording, ctx.config.storage.data_dir, ctx.registry, catalog, lesson_info
    )
    app.router.add_get("/library", library_page)
    app.router.add_get("/api/library", lessons_api)
    app.router.add_get("/api/library/{id}", lesson_api)
    app.router.add_delete("/api/library/{id}", lesson_delete)
    app.router.add_get("/library/{id}/{name}", lesson_file)
