"""The HTTP API (FastAPI): routes, error mapping, auth and body-size middleware.

:func:`create_api` builds the app around two callers (Serve deployment handles in production;
anything with the same ``.method.remote`` shape works) so that the routes hold no model.

==============================  ====================================================
``POST /v1/recommend``          top-k for ``user_id`` or ``history``
``POST /v1/explain``            yes/no, the recommender's score and an explanation
``POST /v1/chat/completions``   OpenAI-compatible; ``model`` = ``<name>`` or ``<name>:<adapter>``
``GET /v1/models``              the model ids ``/v1/chat/completions`` accepts
``GET /healthz``, ``/readyz``   liveness (always 200), readiness (both deployments answer)
``GET /docs``, ``/openapi.json`` the generated documentation
==============================  ====================================================
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray.exceptions import RayActorError

from recexp import __version__
from recexp.config import ServeConfig
from recexp.serve.auth import BearerAuth
from recexp.serve.errors import NotFound, ServeError
from recexp.serve.explainer import BASE, DEFAULT
from recexp.serve.limits import BodySizeLimit
from recexp.serve.schemas import (
    ChatChoice,
    ChatChoiceMessage,
    ChatRequest,
    ChatResponse,
    ExplainRequest,
    ExplainResponse,
    Health,
    ModelCard,
    ModelList,
    RecommendRequest,
    RecommendResponse,
    Usage,
    UserRef,
    check_limits,
)

READY_TIMEOUT_S = 5.0


def create_api(cfg: ServeConfig, recommender: Any, explainer: Any) -> FastAPI:
    """The FastAPI app; ``recommender`` / ``explainer`` are deployment handles."""
    api = FastAPI(title="recexp", version=__version__, description="Explanations of a recommender by an aligned LLM.")
    api.add_exception_handler(ServeError, _serve_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    _health_routes(api, recommender, explainer)
    _rec_routes(api, cfg, recommender, explainer)
    _chat_routes(api, cfg, explainer)
    api.add_middleware(BodySizeLimit, max_bytes=cfg.max_body_bytes)
    api.add_middleware(BearerAuth, token=cfg.auth_token)  # added last = runs first
    return api


def _health_routes(api: FastAPI, recommender: Any, explainer: Any) -> None:
    @api.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok", run_id="")

    @api.get("/readyz", response_model=Health, responses={503: {"description": "a deployment is not ready"}})
    async def readyz() -> Any:
        try:
            run_id, _ = await asyncio.wait_for(
                asyncio.gather(recommender.run_id.remote(), explainer.adapters.remote()), READY_TIMEOUT_S
            )
        except Exception as err:  # noqa: BLE001 - any failure means "not ready", reported in the body
            return JSONResponse({"status": "not ready", "detail": f"{type(err).__name__}: {err}"[:500]}, 503)
        return Health(status="ready", run_id=run_id)


def _rec_routes(api: FastAPI, cfg: ServeConfig, recommender: Any, explainer: Any) -> None:
    @api.post("/v1/recommend", response_model=RecommendResponse, responses=_ERRORS)
    async def recommend(body: RecommendRequest) -> Any:
        _limits(body, cfg, with_k=True)
        return await _retry(lambda: recommender.recommend.remote(body.user_id, body.history, body.k))

    @api.post("/v1/explain", response_model=ExplainResponse, responses=_ERRORS)
    async def explain(body: ExplainRequest) -> Any:
        _limits(body, cfg)
        adapter = body.adapter or DEFAULT
        if adapter == BASE:
            raise NotFound("explanations need an aligned adapter; 'base' has none")
        context = await _retry(lambda: recommender.context.remote(body.user_id, body.history, body.item_id))
        user_id = -1 if body.user_id is None else body.user_id
        result = await _retry(lambda: explainer.options(multiplexed_model_id=adapter).explain.remote(
            context["history"], body.item_id, user_id
        ))
        return ExplainResponse(
            answer=result["answer"], explanation=result["explanation"], rec_score=context["rec_score"],
            rec_percentile=context["rec_percentile"], model=f"{cfg.model_name}:{adapter}", adapter=adapter,
            run_id=context["run_id"], adapter_run_id=result["adapter_run_id"],
        )


def _chat_routes(api: FastAPI, cfg: ServeConfig, explainer: Any) -> None:
    @api.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        names = await explainer.adapters.remote()
        return ModelList(data=[ModelCard(id=cfg.model_name)] + [ModelCard(id=f"{cfg.model_name}:{n}") for n in names])

    @api.post("/v1/chat/completions", response_model=ChatResponse, responses=_ERRORS)
    async def chat(body: ChatRequest) -> Any:
        name, _, adapter = body.model.partition(":")
        if name != cfg.model_name:
            raise NotFound(f"unknown model {body.model!r}; use {cfg.model_name!r} or '{cfg.model_name}:<adapter>'")
        budget = body.token_budget(cfg.max_new_tokens)
        messages = [m.model_dump() for m in body.messages]
        result = await _retry(lambda: explainer.options(multiplexed_model_id=adapter or BASE).chat.remote(
            messages, budget, body.temperature, body.top_p
        ))
        response = _chat_response(body.model, result)
        if body.stream:
            return StreamingResponse(_stream(response), media_type="text/event-stream")
        return response


async def _retry(call: Callable[[], Awaitable[Any]]) -> Any:
    """Every answer is a pure function of its request, so a request whose replica died under it
    (killed, out of memory) is sent once more; the router then picks a live replica."""
    try:
        return await call()
    except RayActorError:
        return await call()


def _chat_response(model: str, result: dict) -> ChatResponse:
    prompt, completion = result["prompt_tokens"], result["completion_tokens"]
    return ChatResponse(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model,
        choices=[ChatChoice(index=0, message=ChatChoiceMessage(content=result["content"]),
                            finish_reason=result["finish_reason"])],
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
    )


async def _stream(response: ChatResponse) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format: the whole answer in one content chunk
    (generation is batched, so tokens are not streamed as they come), then the finish chunk."""
    choice = response.choices[0]
    head = {"id": response.id, "object": "chat.completion.chunk", "created": response.created, "model": response.model}
    deltas = [({"role": "assistant", "content": choice.message.content}, None), ({}, choice.finish_reason)]
    for delta, finish in deltas:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def _limits(body: UserRef, cfg: ServeConfig, with_k: bool = False) -> None:
    errors = check_limits(body, cfg.max_history, cfg.max_k if with_k else None)
    if errors:
        raise RequestValidationError(errors)


async def _serve_error(_: Request, exc: Exception) -> JSONResponse:
    """A :class:`ServeError` from a route or a replica (kept through Ray's task errors)."""
    cause = _cause(exc)
    return JSONResponse({"detail": str(cause)}, status_code=cause.status)


def _cause(exc: Exception) -> ServeError:
    """The :class:`ServeError` itself: Ray wraps a replica's exception, keeping the class."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ServeError):
        return cause
    assert isinstance(exc, ServeError)
    return exc


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 whose ``detail`` names every bad field (``body.k: ...``), plus FastAPI's error list."""
    errors = exc.errors()  # type: ignore[attr-defined]
    fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    listed = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return JSONResponse({"detail": fields, "errors": listed}, status_code=422)


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong bearer token"},
    404: {"description": "unknown user, item, model or adapter"},
    413: {"description": "request body too large"},
    422: {"description": "invalid request (names the field)"},
    503: {"description": "overloaded: retry after the Retry-After header's seconds"},
}
