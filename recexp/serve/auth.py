"""Optional bearer-token check on every route but the health probes (pure ASGI middleware).

Probes (``/healthz``, ``/readyz``) stay open so that load balancers and Kubernetes can call
them without the secret. The token is compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class BearerAuth:
    """401 with ``WWW-Authenticate: Bearer`` unless the request carries ``token``."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or _path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = bearer_token(scope.get("headers", []))
        if given is None or not hmac.compare_digest(given.encode(), self.token):
            reason = "missing bearer token" if given is None else "invalid bearer token"
            response = JSONResponse({"detail": reason}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _path(scope: Scope) -> str:
    """The path below the application's root (Serve may mount it under a route prefix)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
