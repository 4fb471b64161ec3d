"""The API token: everything that reads log lines or changes routes needs ``Authorization: Bearer <token>``.

Without a configured token those endpoints answer 403 saying how to enable them; a missing or wrong token answers
401. Tokens are compared in constant time (``hmac.compare_digest``) and never logged."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from exporters.web.keys import LIVE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DISABLED = ("403 Forbidden: {what} is disabled: start lookout with --api-token-file FILE (a file holding a token; "
            "also api-token-file in the TOML file or LOOKOUT_API_TOKEN_FILE) and send Authorization: Bearer <token>\n")


def refusal(request: web.Request) -> web.Response | None:
    """None if the request carries the configured token, else the 403 or 401 answer."""
    token = request.app[LIVE].token()
    what = f"{request.method} {request.path}"
    if not token:
        return web.Response(status=403, text=DISABLED.format(what=what))
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        why = "a wrong token" if scheme.lower() == "bearer" else "no Authorization: Bearer <token> header"
        return web.Response(status=401, text=f"401 Unauthorized: {what} needs the API token ({why})\n",
                            headers={"WWW-Authenticate": 'Bearer realm="lookout"'})
    return None


def guarded(handler: Handler) -> Handler:
    async def check(request: web.Request) -> web.StreamResponse:
        answer = refusal(request)
        return answer if answer is not None else await handler(request)

    check.__doc__ = handler.__doc__
    return check
