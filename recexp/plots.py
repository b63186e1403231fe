"""Headless matplotlib for the stages' PNG artifacts (loss curves, metric charts)."""

from __future__ import annotations

import io
from typing import Any


def subplots(width: float = 6.0, height: float = 3.5, dpi: int = 100) -> tuple[Any, Any]:
    """``(figure, axes)`` on the Agg backend: cluster nodes have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=dpi)


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
