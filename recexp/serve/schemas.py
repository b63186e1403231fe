"""Request and response bodies of the HTTP API (pydantic, strict).

Requests reject unknown fields and wrong JSON types (``"5"`` is not an int): a mistake gets a
422 naming the field instead of a guess. Limits that depend on the config (history length,
``k``) are checked by :func:`check_limits` so that they fail the same way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strict = ConfigDict(extra="forbid", strict=True)


class UserRef(BaseModel):
    """A user: a known ``user_id`` (its full history from ingest) or an explicit ``history``."""

    model_config = Strict

    user_id: int | None = Field(None, ge=0, description="Dense user id of the served run.")
    history: list[int] | None = Field(
        None, min_length=1, description="Chronological item ids (oldest first), instead of user_id."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> UserRef:
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id and history")
        return self


class RecommendRequest(UserRef):
    k: int = Field(10, ge=1, description="Number of items to return.")


class ScoredItem(BaseModel):
    item_id: int
    title: str
    score: float


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    run_id: str


class ExplainRequest(UserRef):
    item_id: int = Field(ge=0, description="The item to explain.")
    adapter: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Aligned adapter name.")


class ExplainResponse(BaseModel):
    answer: Literal["yes", "no"]
    """The aligned LLM's verdict: its ``Yes`` vs ``No`` score at the first answer token."""
    rec_score: float
    """The recommender's score of the item for this history."""
    rec_percentile: float
    """Share of the catalog the recommender scores below this item (1.0 = its favourite)."""
    explanation: str
    model: str
    adapter: str
    run_id: str
    """Run whose recommender, catalog and user histories answered."""
    adapter_run_id: str
    """Run whose aligned adapter generated the explanation."""


class ChatMessage(BaseModel):
    model_config = Strict

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=16384)


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat-completions request the service honours; the other
    parameters the official client may send are accepted only when they change nothing."""

    model_config = Strict

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    seed: int | None = None
    user: str | None = None

    def token_budget(self, cap: int) -> int:
        """Tokens to generate: what the client asked for, at most ``cap``."""
        asked = self.max_completion_tokens or self.max_tokens or cap
        return min(asked, cap)


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "recexp"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str
    run_id: str


def check_limits(request: UserRef, max_history: int, max_k: int | None = None) -> list[dict]:
    """Config-dependent limits, as FastAPI validation errors (empty when all is well)."""
    errors = []
    if request.history is not None and len(request.history) > max_history:
        errors.append(_error("history", f"at most {max_history} items", "too_long"))
    if request.history is not None and min(request.history) < 0:
        errors.append(_error("history", "item ids must be >= 0", "greater_than_equal"))
    k = getattr(request, "k", None)
    if max_k is not None and k is not None and k > max_k:
        errors.append(_error("k", f"must be <= {max_k}", "less_than_equal"))
    return errors


def _error(field: str, message: str, kind: str) -> dict:
    return {"loc": ("body", field), "msg": message, "type": kind}
