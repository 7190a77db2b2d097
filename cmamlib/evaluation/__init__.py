"""Ranking evaluation for visible-infrared re-identification (SYSU-MM01, RegDB, LLCM).

Three metric functions take a query x gallery distance matrix and return
``(cmc, mAP, mINP)`` with exactly the semantics of the evaluation code that most
published VI-ReID numbers come from (Ye et al., Cross-Modal-Re-ID-baseline,
``eval_metrics.py``; the LLCM variant from Zhang & Wang, DEEN, CVPR 2023), written
vectorised instead of one Python loop per query:

- :func:`eval_sysu`: ``np.argsort`` ranking; for a query from camera 3 every gallery
  entry from camera 2 is dropped; the CMC curve is computed on the ranked gallery
  *identities with duplicates removed* (first occurrence kept) and summed over all
  queries, divided by the number of valid queries (queries with at least one kept
  positive); AP and INP are averaged over valid queries.
- :func:`eval_regdb`: standard CMC (first positive), nothing removed.
- :func:`eval_llcm`: as SYSU, but the dropped entries are those with the query's
  identity *and* camera.

mINP (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook",
TPAMI 2021) is ``#positives / rank of the last positive``.

On top of them, feature-level helpers build the protocol galleries from
:class:`~cmamlib.data.records.Record` lists and average over trials:
:func:`sysu_gallery_indices` (docs/protocols.md: ``random.seed(trial)``, one
``random.choice`` per test identity and gallery camera from the path-sorted file
list), :func:`evaluate_sysu` (all-search and indoor, 10 trials),
:func:`evaluate_regdb` (the 10 splits, both directions) and :func:`evaluate_llcm`.
:func:`evaluate_sysu` also runs the SYSU-MM01 authors' own protocol
(``protocol="official"``: galleries from ``exp/rand_perm_cam.mat``, test ids from
``exp/test_id.mat``, Euclidean ranking, gallery entries at the query's camera location
dropped; :func:`sysu_official_gallery_indices`, :func:`eval_sysu_official`);
:func:`evaluate_sysu_mm02` runs SYSU-MM02 (visible -> infrared, then the reverse).
They return :class:`EvalResult` objects (per-trial values, mean, std,
``to_dict()`` for JSON). Distances are ``-q @ g.T`` on L2-normalised features (the
baseline's choice; it ranks exactly as the Euclidean distance does), computed in
chunks with torch.

Layout: :mod:`.ranking` (metrics of a distance matrix, ``eval_*``), :mod:`.distances`,
:mod:`.galleries`, :mod:`.results` (:class:`EvalResult`) and :mod:`.protocols`
(``evaluate_*`` on features); everything is importable from ``cmamlib.evaluation``.
"""

from __future__ import annotations

from .constants import REPORTED_RANKS, SYSU_GALLERY_CAMERAS, SYSU_PROTOCOLS
from .distances import pairwise_distance
from .galleries import sample_gallery_indices, sysu_gallery_indices, sysu_official_gallery_indices
from .protocols import evaluate_llcm, evaluate_regdb, evaluate_sysu, evaluate_sysu_mm02
from .ranking import eval_llcm, eval_market, eval_regdb, eval_sysu, eval_sysu_official
from .results import EvalResult

__all__ = [
    "EvalResult",
    "REPORTED_RANKS",
    "SYSU_GALLERY_CAMERAS",
    "SYSU_PROTOCOLS",
    "eval_llcm",
    "eval_market",
    "eval_regdb",
    "eval_sysu",
    "eval_sysu_official",
    "evaluate_llcm",
    "evaluate_regdb",
    "evaluate_sysu",
    "evaluate_sysu_mm02",
    "pairwise_distance",
    "sample_gallery_indices",
    "sysu_gallery_indices",
    "sysu_official_gallery_indices",
]
