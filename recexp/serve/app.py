"""The Serve application: HTTP ingress -> Recommender + Explainer, options from ``serve.*``.

Three ways to run it, all from a ``RunConfig``:

* ``recexp serve --config configs/serve/local.yaml run_id=... [key=value ...]`` (ray_jobs/serve.py);
* ``serve run recexp.serve.app:build config=configs/serve/local.yaml run_id=... serve.port=8000``
  (``build`` is a Serve application builder: its arguments are the config file and overrides);
* ``serve deploy`` / ``serve run`` of a Serve config file naming ``import_path: recexp.serve.app:build``
  with the same ``args`` (``cluster/serve/deploy.yaml``).

Options: the Explainer autoscales between ``serve.min_replicas`` and ``serve.max_replicas`` on
``serve.target_ongoing_requests``; ``max_ongoing_requests`` bounds its concurrency and
``max_queued_requests`` its queue, past which requests get 503 with ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import AutoscalingConfig, BackpressureConfig

from recexp.config import RunConfig, ServeConfig, load_config
from recexp.serve.api import create_api
from recexp.serve.deployments import Explainer, Recommender, as_user_config, config_from

APP_NAME = "recexp"


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """The FastAPI app, built on the replica from the served config."""

    def __init__(self, recommender: Any, explainer: Any, settings: dict[str, Any]) -> None:
        self.cfg = config_from(settings).serve
        self.recommender, self.explainer = recommender, explainer

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self.cfg, self.recommender, self.explainer)


def autoscaling(s: ServeConfig) -> AutoscalingConfig:
    return AutoscalingConfig(
        min_replicas=s.min_replicas, initial_replicas=s.min_replicas, max_replicas=s.max_replicas,
        target_ongoing_requests=s.target_ongoing_requests, upscale_delay_s=s.upscale_delay_s,
        downscale_delay_s=s.downscale_delay_s, metrics_interval_s=s.metrics_interval_s,
        look_back_period_s=s.look_back_period_s,
    )


def application(cfg: RunConfig) -> Application:
    """The bound application for ``cfg`` (``cfg.run_id`` must name a committed run)."""
    s, settings = cfg.serve, as_user_config(cfg)
    common = {
        "health_check_period_s": s.health_check_period_s, "health_check_timeout_s": s.health_check_timeout_s,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=s.retry_after_s),
        "max_surge_percent": s.rollout_surge_percent,
    }
    recommender = Recommender.options(
        num_replicas=s.recommender_replicas, ray_actor_options={"num_cpus": s.recommender_cpus},
        max_ongoing_requests=s.front_max_ongoing_requests,
        user_config=settings, **common,
    ).bind()
    explainer = Explainer.options(
        autoscaling_config=autoscaling(s), ray_actor_options={"num_cpus": s.explainer_cpus},
        max_ongoing_requests=s.max_ongoing_requests, max_queued_requests=s.max_queued_requests,
        user_config=settings, **common,
    ).bind()
    ingress_settings = {"serve": settings["serve"]}  # the ingress reads only serve.*
    ingress = Ingress.options(
        ray_actor_options={"num_cpus": 0}, max_ongoing_requests=s.front_max_ongoing_requests,
        **common,
    )
    return ingress.bind(recommender, explainer, ingress_settings)


def http_options(s: ServeConfig) -> dict[str, Any]:
    """Serve's cluster-wide HTTP options: bind address, port, end-to-end timeout."""
    return {"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s}


def build(args: dict[str, str]) -> Application:
    """Serve application builder: ``{"config": FILE, "<dotted key>": value, ...}`` -> application.

    HTTP options (host, port) are cluster-wide in Serve: ``serve run`` / ``serve deploy`` take
    them from their own flags or config file, ``recexp serve`` from ``serve.host`` / ``serve.port``."""
    args = dict(args)
    path = args.pop("config", None)
    cfg = load_config(path, [f"{key}={value}" for key, value in args.items()])
    return application(cfg)


def start(cfg: RunConfig) -> str:
    """Start Serve on the connected Ray cluster and deploy ``cfg``'s run; returns the base URL.

    ``serve.run`` returns once every deployment is healthy (models loaded). Serve's HTTP options
    are fixed when Serve first starts on a cluster: call :func:`stop` before changing the port."""
    serve.start(http_options=http_options(cfg.serve))
    serve.run(application(cfg), name=APP_NAME, route_prefix="/")
    return f"http://{cfg.serve.host}:{cfg.serve.port}"


def stop() -> None:
    """Shut Serve down (every application, the proxy and the controller)."""
    serve.shutdown()
