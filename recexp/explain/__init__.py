"""Explanations from an aligned model: batched generation and the per-partition explain work.

=================  ==================================================================
``generate``       ``generate_texts`` / ``generate_batched``: length-sorted, left-padded
                   batches through ``AlignedLM.generate`` (KV cache), results in input order,
                   generated-token counts and first-step scores of chosen tokens
``batch``          the ``explain`` stage's work on one partition: requests -> prompt rows
                   -> answers (Yes/No logits) and explanations -> an Arrow table
=================  ==================================================================

Components only (no Ray): ``ray_jobs/explain.py`` runs ``batch`` in a Ray Data actor pool.
"""
