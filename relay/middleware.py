"""What every response goes through: the error mapping, CORS, and the browser's guards.

- Errors: the error tree (relay.core.errors) becomes a status and a one-line reason here and
  nowhere else; a Retry-After goes with 429 and 503.
- CORS: WHIP and WHEP are made for pages of other origins (RFC 9725 §4.8), so they answer any
  origin, with exactly the methods each resource has. Nothing else is shared: the JSON API
  and the event stream refuse requests a page of another origin sends (CSRF, cross-site
  WebSocket hijacking), and pages get a content security policy and may not be framed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from monitoring import metrics
from relay.core.errors import Forbidden, KetangError, status_of

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MEDIA_PREFIXES = ("/whip/", "/whep/")
CORS_COMMON = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Patch, Retry-After",
    "Access-Control-Max-Age": "600",
}
# The methods of an endpoint (POST an offer) and of a session (trickle, end), RFC 9725 §4.
ENDPOINT_METHODS = "POST, OPTIONS"
SESSION_METHODS = "PATCH, DELETE, OPTIONS"
# Pages load only their own scripts, styles and media, talk only to their own origin, and
# may not be put in a frame (clickjacking a teacher's "end lesson" button).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error_response(request: web.Request, error: BaseException) -> web.Response:
    """The one place an error becomes a response: JSON under /api, else one line of text."""
    status, message = status_of(error)
    metrics.count_http_error(status)
    limit = getattr(error, "limit", None)
    if limit is not None:
        metrics.count_limited(limit)
    headers = {}
    retry = getattr(error, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(math.ceil(retry))
    if request.path.startswith("/api/"):
        return web.json_response({"error": message}, status=status, headers=headers)
    return web.Response(status=status, text=message + "\n", headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the error tree onto HTTP; unexpected errors are logged and answered 500."""
    try:
        return await handler(request)
    except KetangError as error:
        if error.status >= 500 and error.status != 503:
            logger.error("internal error on %s %s: %s", request.method, request.path, error)
        return error_response(request, error)
    except web.HTTPException:
        raise
    except Exception as error:
        logger.exception("unhandled error on %s %s", request.method, request.path[:200])
        return error_response(request, error)


def _cors_headers(path: str) -> dict[str, str]:
    methods = ENDPOINT_METHODS if path.count("/") == 2 else SESSION_METHODS
    return {**CORS_COMMON, "Access-Control-Allow-Methods": methods}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS headers on the WHIP/WHEP endpoints and sessions, error answers included."""
    if not request.path.startswith(MEDIA_PREFIXES):
        return await handler(request)
    headers = _cors_headers(request.path.rstrip("/"))
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(headers)
        raise
    response.headers.update(headers)
    return response


def same_origin(public_url: str | None) -> Middleware:
    """Refuse API requests that a page of another origin sends (browsers always send
    `Origin` on cross-origin requests and on WebSockets); pages get their guard headers."""
    configured = urlsplit(public_url).netloc if public_url else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.path.startswith("/api/") and origin is not None:
            netloc = urlsplit(origin).netloc
            if netloc not in (request.host, configured):
                refused = Forbidden("cross-origin API requests are refused", limit="cross_origin")
                return error_response(request, refused)
        response = await handler(request)
        if response.content_type == "text/html":
            response.headers.update(PAGE_HEADERS)
        return response

    return guard
