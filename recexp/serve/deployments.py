"""Ray Serve deployments around the two cores: ``Recommender`` and ``Explainer``.

Both take the run's config as ``user_config`` (a plain dict). A new run id deployed through a
Serve config file (``serve deploy``: same code version) calls ``reconfigure`` on the running
replicas, which load the new run beside the old one and swap it in, so requests in flight finish
on the old run; deployed with ``serve.run`` (a new code version) the replicas are replaced in a
rolling update with surge (``serve.rollout_surge_percent``): old replicas serve until their
replacements are ready. Either way no request is dropped.

``Explainer``:

* ``@serve.multiplexed``: adapter ids (``default``, the ``serve.adapters`` names, ``base``) are
  Serve model ids; requests for an adapter go to a replica that holds it, and each replica keeps
  at most ``serve.max_adapters_per_replica`` (LRU) loaded into its one base model;
* ``@serve.batch``: concurrent requests are generated together; Serve splits batches by model
  id, so a batch has one adapter. ``serve.batch_max_size = 1`` gives the unbatched deployment
  (the benchmark's baseline).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import Counter
from typing import Any

from ray import serve

from recexp.config import RunConfig, load_config, to_dict
from recexp.serve.errors import Unprocessable
from recexp.serve.explainer import BASE, Adapter, ExplainerCore
from recexp.serve.recommend import RecommenderCore


def config_from(user_config: dict[str, Any]) -> RunConfig:
    """The ``RunConfig`` carried as ``user_config`` (a plain dict, see :func:`as_user_config`)."""
    return load_config(None, [f"{key}={value}" for key, value in _flatten(user_config)])


def as_user_config(cfg: RunConfig) -> dict[str, Any]:
    """The parts of ``cfg`` the deployments read, as plain JSON-able data."""
    data = to_dict(cfg)
    return {key: data[key] for key in ("run_id", "inputs", "store", "tasks", "serve")}


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", "1")]`` with values as YAML flow scalars."""
    out = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out += _flatten(value, f"{prefix}{key}.")
        elif not isinstance(value, dict):
            out.append((f"{prefix}{key}", "null" if value is None else json.dumps(value)))
    return out


@serve.deployment(name="Recommender")
class Recommender:
    """Top-k, item scores and user histories of the served run."""

    def __init__(self) -> None:
        self.core: RecommenderCore | None = None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = config_from(user_config)
        if self.core is None or self.core.run_id != cfg.run_id:
            self.core = RecommenderCore.load(cfg)  # built beside the old core, then swapped in one step

    def recommend(self, user_id: int | None, history: list[int] | None, k: int) -> dict:
        return self.core.recommend(user_id, history, k)

    def context(self, user_id: int | None, history: list[int] | None, item_id: int) -> dict:
        return self.core.context(user_id, history, item_id)

    def run_id(self) -> str:
        return self.core.run_id


@serve.deployment(name="Explainer")
class Explainer:
    """The aligned LLM: explanations and chat, batched, with multiplexed adapters."""

    def __init__(self) -> None:
        self.core: ExplainerCore | None = None
        self.batches: Counter[int] = Counter()
        """How many batches of each size this replica ran (observability, tests, benchmark)."""

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = config_from(user_config)
        if self.core is not None and self.core.cfg == cfg:
            return
        first = self.core is None
        self.core = ExplainerCore(cfg)  # loaded beside the old core: in-flight batches keep theirs
        for method in (self._explain_batch, self._chat_batch):
            method.set_max_batch_size(cfg.serve.batch_max_size)
            method.set_batch_wait_timeout_s(cfg.serve.batch_wait_timeout_s)
        if first:
            self._wire_multiplexing(cfg)

    def _wire_multiplexing(self, cfg: RunConfig) -> None:
        """``@serve.multiplexed`` with the configured size, applied per replica."""
        async def load(adapter_id: str) -> AdapterRef:
            core = self.core
            await asyncio.to_thread(core.load_adapter, adapter_id)
            return AdapterRef(core, adapter_id)

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=cfg.serve.max_adapters_per_replica)(load)

    async def _adapter(self, core: ExplainerCore) -> Adapter | None:
        """The request's adapter in ``core`` (Serve's multiplexing keeps the LRU bookkeeping; after a
        reconfigure the cached entry may belong to the previous core, so resolve by name)."""
        ref = await self.get_adapter(serve.get_multiplexed_model_id() or BASE)
        if ref.name == BASE:
            return None
        return core.resident.get(ref.name) or await asyncio.to_thread(core.load_adapter, ref.name)

    async def explain(self, history: list[int], item_id: int, user_id: int) -> dict:
        """One explanation; the prompt is built and checked here so that a bad request fails alone."""
        core = self.core
        adapter = await self._adapter(core)
        if adapter is None:
            raise Unprocessable("explanations need an aligned adapter, not 'base'")
        row = core.explain_row(adapter, history, item_id, user_id)
        return await self._explain_batch(row)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _explain_batch(self, rows: list[dict]) -> list[dict]:
        core = self.core
        adapter = await self._adapter(core)
        self.batches[len(rows)] += 1
        return await asyncio.to_thread(core.explain_batch, adapter, rows)

    async def chat(self, messages: list[dict], max_tokens: int, temperature: float | None, top_p: float | None) -> dict:
        """One chat completion (the prompt is checked here, see :meth:`explain`)."""
        core = self.core
        await self._adapter(core)  # an unknown adapter fails before queueing
        job = {"row": core.chat_row(messages), "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        return await self._chat_batch(job)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _chat_batch(self, jobs: list[dict]) -> list[dict]:
        core = self.core
        adapter = await self._adapter(core)
        self.batches[len(jobs)] += 1
        return await asyncio.to_thread(core.chat_batch, adapter, jobs)

    def batch_sizes(self) -> dict[int, int]:
        """``{batch size: number of batches}`` run by this replica so far."""
        return dict(self.batches)

    def adapters(self) -> list[str]:
        return self.core.adapter_names

    def check_health(self) -> None:
        if self.core is None:
            raise RuntimeError("model not loaded")


class AdapterRef:
    """What the multiplexed loader caches; Serve calls ``__del__`` when it evicts it (LRU).
    The core is held weakly: after a reconfigure, cached entries must not keep the old model alive."""

    def __init__(self, core: ExplainerCore, name: str) -> None:
        self.core = weakref.ref(core)
        self.name = name

    def __del__(self) -> None:
        core, self.core = self.core(), lambda: None
        if core is not None:
            core.unload_adapter(self.name)
