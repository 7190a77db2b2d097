"""cmamlib: unsupervised transferable visible-infrared person re-identification.

Stage 1, CMAM (cross-modality asymmetric mutual learning) on unlabeled visible-only
source images; stage 2, self-training on the unlabeled visible + infrared target with
per-modality clustering and bipartite (Hungarian) cross-modality pseudo labels.
See ``docs/method.md`` and the README.
"""

__version__ = "0.1.0"
