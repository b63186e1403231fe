"""Errors a deployment raises for the ingress to turn into an HTTP status.

They travel from a replica to the ingress inside Ray's task errors, which keep the class,
so ``except NotFound`` works across processes.
"""

from __future__ import annotations

from recexp.errors import RecexpError


class ServeError(RecexpError):
    """A refused request: ``status`` is the HTTP status, the message the response detail."""

    status = 400


class NotFound(ServeError):
    """An unknown user, item or adapter (404)."""

    status = 404


class Unprocessable(ServeError):
    """A well-formed request the model cannot take, e.g. a prompt over the token limit (422)."""

    status = 422
