"""The RecExplainer alignment tasks (Lei et al., KDD'24), built from a recommender's outputs.

Pure components, usable without Ray (the recipe ``ray_jobs/build_alignment_data.py`` wires
them to Ray Data; ``bench/tasks_pandas_baseline.py`` drives them from pandas):

=================  ==================================================================
``sanitize``       untrusted text -> safe prompt text (no slots, turns or roles)
``templates``      paraphrased prompt templates (``templates.yaml``), seeded choice
``catalog``        the sanitised item catalog shared by every builder
``context``        parameters, catalog and templates together; per-user seeded RNGs
``forms``          a history / item in behaviour, intention or hybrid form
``rows``           the row schema, row building, the slot check
``users``          one user's sequence and recommender outputs
``next_item``      T1 next item (``uid2next``), T2 ranking (``uidiid2rank``)
``interest``       T3 interest (``uidiid2binary``), explanation prompts (``uidiid2explan``)
``items``          T4 item discrimination (``iid2title/sim/brand/category/description``)
``history``        T6 history reconstruction (``uid2hist``), T7 added item (``uid2added``)
``general``        T5 general instructions from a JSON-lines chat file
``counts``         row counts and the protocol's predictions
``io``             reading upstream stages, partition files
=================  ==================================================================
"""

from recexp.tasks.catalog import Catalog, build_catalog
from recexp.tasks.context import BuildContext, BuildParams, task_rng
from recexp.tasks.rows import ROW_SCHEMA, RowBuffer, check_row
from recexp.tasks.sanitize import ITEM_SLOT, USER_SLOT, escape_text, sanitize_title
from recexp.tasks.templates import TemplateSet, load_templates
from recexp.tasks.users import UserRecord, user_records

__all__ = [
    "ITEM_SLOT",
    "ROW_SCHEMA",
    "USER_SLOT",
    "BuildContext",
    "BuildParams",
    "Catalog",
    "RowBuffer",
    "TemplateSet",
    "UserRecord",
    "build_catalog",
    "check_row",
    "escape_text",
    "load_templates",
    "sanitize_title",
    "task_rng",
    "user_records",
]
