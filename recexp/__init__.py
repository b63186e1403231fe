"""recexp: explain black-box recommenders by aligning an LLM to them (RecExplainer), on Ray."""

__version__ = "0.1.0"
