"""LLM judge of explanations: RecExplainer's 0-3 rubric, asked of any OpenAI-compatible endpoint.

For each explanation the judge gets the user's history (titles), the recommended item and the
explanation, filled into the rubric prompt (:data:`RUBRIC_FILE`, or ``judge.rubric``), and
answers with a score 0-3. Plain HTTP (``urllib``, no client package): ``POST
<judge.base_url>/chat/completions`` with ``Authorization: Bearer $<judge.api_key_env>`` when that
variable is set, ``judge.concurrency`` requests in flight, each retried ``judge.retries`` times
with exponential backoff after a connection error, a timeout, HTTP 408, 429 or 5xx; any other
HTTP error, or retries exhausted, is one :class:`JudgeError` naming the endpoint.

Replies are parsed by :func:`parse_score`; one that holds no score 0-3 is counted
(``judge_unparsed``) and kept raw, never dropped. Metrics (:func:`judge_metrics`, reported in
the task ``explanations``): ``judge_mean`` over parsed scores, ``judge_score_0`` .. ``_3`` (the
histogram, counts), ``judge_n`` (explanations judged), ``judge_unparsed``.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import yaml

from recexp.config import JudgeConfig
from recexp.errors import ConfigError, RecexpError
from recexp.tasks.sanitize import escape_text

RUBRIC_FILE = "judge_rubric.yaml"
SCORES = (0, 1, 2, 3)
PLACEHOLDERS = frozenset({"history", "item", "explanation"})
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")


class JudgeError(RecexpError):
    """The judge endpoint could not be used (unreachable, refused, or not an OpenAI answer)."""


# ----------------------------------------------------------------------------- prompt


@dataclass(frozen=True)
class Rubric:
    """The judge's system message and user-message template."""

    system: str
    user: string.Template

    def messages(self, history: Sequence[str], item: str, explanation: str) -> list[dict[str, str]]:
        """The chat for one explanation; the explanation is escaped (no control or role tokens)."""
        text = self.user.substitute(
            history="\n".join(f"- {title}" for title in history) or "- (no history)",
            item=item, explanation=escape_text(explanation),
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": text}]


def parse_rubric(data: Any, source: str) -> Rubric:
    """A :class:`Rubric` from parsed YAML; its user template must use exactly :data:`PLACEHOLDERS`."""
    if not isinstance(data, Mapping) or not all(isinstance(data.get(k), str) for k in ("system", "user")):
        raise ConfigError(f"judge.rubric: {source}: needs string keys 'system' and 'user'")
    user = string.Template(data["user"])
    used = {m.group("named") or m.group("braced") for m in user.pattern.finditer(user.template)} - {None}
    if used != PLACEHOLDERS or not user.is_valid():
        raise ConfigError(f"judge.rubric: {source}: the user template uses {sorted(used)}; "
                          f"it must use each of {sorted(PLACEHOLDERS)} (write $$ for a dollar sign)")
    return Rubric(data["system"].strip(), user)


def load_rubric(path: str = "", endpoint_url: str | None = None) -> Rubric:
    """The built-in rubric, or the YAML file at ``path`` (local or any fsspec URL)."""
    if not path:
        text = importlib.resources.files("recexp.explain").joinpath(RUBRIC_FILE).read_text(encoding="utf-8")
        return parse_rubric(yaml.safe_load(text), f"built-in {RUBRIC_FILE}")
    from recexp.store import read_yaml

    return parse_rubric(read_yaml(path, endpoint_url, "judge.rubric"), path)


# ----------------------------------------------------------------------------- reply


def _json_score(reply: str) -> tuple[bool, int | None]:
    """``(found, score)``: whether some JSON object in ``reply`` has a ``score``, and the first such
    score when it is 0-3 (an int or a digit string; anything else: None)."""
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(reply) if char == "{"):
        try:
            obj, _ = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or "score" not in obj:
            continue
        value = obj["score"]
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        valid = isinstance(value, int) and not isinstance(value, bool) and value in SCORES
        return True, value if valid else None
    return False, None


def parse_score(reply: str) -> int | None:
    """The score in a judge reply: ``score`` of the first JSON object that has one (None when it is
    not 0-3), else the first whole number 0-3 in the text (``"2"``, ``"Score: 3/3"``; decimals,
    negative numbers and numbers above 3 are passed over). None when the reply holds no score."""
    found, score = _json_score(reply)
    if found:
        return score
    for match in _NUMBER.finditer(reply):
        if match.group(0).isdigit() and int(match.group(0)) in SCORES:
            return int(match.group(0))
    return None


# ----------------------------------------------------------------------------- HTTP


def api_key(cfg: JudgeConfig) -> str | None:
    """The key from the environment variable ``cfg.api_key_env`` (None: unset, empty or no variable)."""
    return os.environ.get(cfg.api_key_env) or None if cfg.api_key_env else None


class JudgeClient:
    """Chat completions from one endpoint, with retries and bounded concurrency (thread-safe)."""

    def __init__(self, cfg: JudgeConfig, key: str | None = None) -> None:
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._lock = threading.Lock()
        self.requests = 0
        """HTTP requests sent, retries included."""

    def complete(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The reply text to one chat (``""`` when the endpoint returns no content)."""
        body = json.dumps({
            "model": self.cfg.model, "messages": list(messages), "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
        }).encode()
        for attempt in range(self.cfg.retries + 1):
            try:
                return self._content(self._post(body))
            except _Retryable as err:
                if attempt == self.cfg.retries:
                    raise JudgeError(
                        f"judge endpoint {self.url} failed after {attempt + 1} attempts: {err.reason}"
                    ) from None
                time.sleep(max(self.cfg.backoff_s * 2**attempt, min(err.retry_after, MAX_RETRY_AFTER_S)))
        raise AssertionError("unreachable")

    def complete_all(self, chats: Sequence[Sequence[Mapping[str, str]]]) -> list[str]:
        """Replies to ``chats`` in order, ``cfg.concurrency`` at a time; the first error stops the rest."""
        with ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="judge") as pool:
            futures = [pool.submit(self.complete, chat) for chat in chats]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _post(self, body: bytes) -> bytes:
        with self._lock:
            self.requests += 1
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300]
            if err.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {err.code}: {detail}", _retry_after(err.headers)) from None
            raise JudgeError(f"judge endpoint {self.url} answered HTTP {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise _Retryable(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from None

    def _content(self, raw: bytes) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(
                f"judge endpoint {self.url} sent no OpenAI chat completion: {raw[:300].decode('utf-8', 'replace')}"
            ) from None
        return "" if content is None else str(content)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


def _retry_after(headers: Any) -> float:
    """Seconds of a ``Retry-After: <seconds>`` header (0 when absent or a date)."""
    value = (headers or {}).get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return 0.0


# ----------------------------------------------------------------------------- judging


@dataclass
class Verdict:
    """One judged explanation: the raw reply and its score (None: unparsed)."""

    reply: str
    score: int | None


def judge_metrics(scores: Sequence[int | None]) -> dict[str, float]:
    """``judge_n``, ``judge_unparsed``, the histogram ``judge_score_<s>`` and ``judge_mean``
    (over parsed scores; absent when none parsed)."""
    parsed = [s for s in scores if s is not None]
    metrics = {"judge_n": float(len(scores)), "judge_unparsed": float(len(scores) - len(parsed))}
    metrics.update({f"judge_score_{s}": float(parsed.count(s)) for s in SCORES})
    if parsed:
        metrics["judge_mean"] = float(sum(parsed) / len(parsed))
    return metrics


def judge_explanations(
    client: JudgeClient, rubric: Rubric, histories: Sequence[Sequence[str]], items: Sequence[str],
    explanations: Sequence[str],
) -> tuple[dict[str, float], list[Verdict]]:
    """Ask the judge about every explanation (history titles, item title, text); metrics and verdicts."""
    chats = [rubric.messages(h, i, e) for h, i, e in zip(histories, items, explanations, strict=True)]
    replies = client.complete_all(chats)
    verdicts = [Verdict(reply, parse_score(reply)) for reply in replies]
    return judge_metrics([v.score for v in verdicts]), verdicts
