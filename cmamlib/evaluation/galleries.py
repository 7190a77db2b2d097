"""The protocol galleries: SYSU-MM01's random one-shot galleries per trial (the
baseline's ``random.seed(trial)``, one ``random.choice`` per test identity and gallery
camera from the path-sorted file list), the SYSU-MM01 authors' own galleries
(``exp/rand_perm_cam.mat``) and a generic sampler."""

from __future__ import annotations

import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from ..data.readers import (
    SYSU_OFFICIAL_FILES,
    SysuOfficialSplit,
)
from ..data.records import DatasetError, Record
from .constants import SYSU_GALLERY_CAMERAS


def sample_gallery_indices(
    records: Sequence[Record],
    cameras: Iterable[int],
    trial: int,
    shot: int = 1,
) -> list[int]:
    """Seeded random gallery of the SYSU-MM01 / LLCM protocols.

    ``random.seed(trial)``; for each identity in increasing order, for each camera in
    ``cameras`` order where that identity has images, ``random.choice`` of the file
    list sorted by path (``shot == 1``) or ``random.sample`` of ``shot`` files (fewer
    when the camera holds fewer images: reconstruction, the protocol text does not
    say). Python's global ``random`` state is saved and restored around the draw.

    Args:
        records: gallery candidates (all test images of the gallery modality).
        cameras: camera ids in protocol order.
        trial: seed.
        shot: images per identity and camera.

    Returns:
        Indices into ``records`` in protocol order.
    """
    if isinstance(shot, bool) or int(shot) != shot or shot < 1:
        raise ValueError(f"shot must be a positive integer, got {shot!r}")
    cameras = [int(c) for c in cameras]
    groups: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[(int(r.pid), int(r.camid))].append((str(r.path), i))
    pids = sorted({pid for pid, _ in groups})
    state = random.getstate()
    try:
        random.seed(trial)
        chosen: list[int] = []
        for pid in pids:
            for cam in cameras:
                files = groups.get((pid, cam))
                if not files:
                    continue
                files = sorted(files)
                if shot == 1:
                    chosen.append(random.choice(files)[1])
                else:
                    chosen.extend(f[1] for f in random.sample(files, min(int(shot), len(files))))
    finally:
        random.setstate(state)
    return chosen


def sysu_gallery_indices(
    gallery_candidate_records: Sequence[Record],
    mode: str = "all",
    trial: int = 0,
    shot: int = 1,
) -> list[int]:
    """SYSU-MM01 gallery of one trial (docs/protocols.md, seeded-random baseline protocol).

    Args:
        gallery_candidate_records: every visible test image (cams 1, 2, 4, 5, 1-based
            ``camid``), in any order.
        mode: ``"all"`` (cameras 1, 2, 4, 5) or ``"indoor"`` (cameras 1, 2).
        trial: trial number, used as the ``random.seed``.
        shot: 1 (single-shot, ``random.choice``) or 10 (multi-shot, ``random.sample``).

    Returns:
        Indices into ``gallery_candidate_records``, in protocol order (identity, then
        camera).
    """
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ValueError(f"mode must be one of {sorted(SYSU_GALLERY_CAMERAS)}, got {mode!r}")
    return sample_gallery_indices(gallery_candidate_records, SYSU_GALLERY_CAMERAS[mode], trial, shot)


def sysu_official_gallery_indices(
    gallery_candidate_records: Sequence[Record],
    split: SysuOfficialSplit,
    mode: str = "all",
    trial: int = 0,
    shot: int = 1,
) -> list[int]:
    """SYSU-MM01 gallery of one trial in the dataset authors' own protocol.

    For each gallery camera of ``mode`` in order, for each test id in ``test_id.mat``
    order: the images of that camera and id in sorted file order, indexed by the first
    ``shot`` entries of row ``trial`` of ``rand_perm_cam{cam}{id}`` (1-based), as the
    authors' ``get_testing_set``. Entries whose permutation is empty are skipped.

    Args:
        gallery_candidate_records: every visible test image of the mode's cameras
            (:func:`~cmamlib.data.readers.sysu_query_gallery`), any order.
        split: :func:`~cmamlib.data.readers.read_sysu_mm01_official` of the same root.
        mode: ``"all"`` (cameras 1, 2, 4, 5) or ``"indoor"`` (1, 2).
        trial: 0-based trial (row of the permutation matrices).
        shot: 1 (single-shot) or 10 (multi-shot).

    Returns:
        Indices into ``gallery_candidate_records``, camera-major as the authors' code.

    Raises:
        DatasetError: the images of a (camera, id) do not number what its permutation
            permutes (the .mat file and the tree disagree).
        ValueError: bad mode, trial beyond the file's rows, shot < 1.
    """
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ValueError(f"mode must be one of {sorted(SYSU_GALLERY_CAMERAS)}, got {mode!r}")
    if isinstance(shot, bool) or int(shot) != shot or shot < 1:
        raise ValueError(f"shot must be a positive integer, got {shot!r}")
    if not 0 <= int(trial) < split.num_trials:
        raise ValueError(f"trial={trial}: the official split has {split.num_trials} trials (0..{split.num_trials - 1})")
    groups: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)
    for i, r in enumerate(gallery_candidate_records):
        groups[(int(r.pid), int(r.camid))].append((str(r.path), i))
    perm_file = os.path.join(split.root, *SYSU_OFFICIAL_FILES[0].split("/"))
    chosen: list[int] = []
    for cam in SYSU_GALLERY_CAMERAS[mode]:
        for pid in split.test_ids:
            files = sorted(groups.get((pid, cam), []))
            perm = split.rand_perm.get((cam, pid))
            n = 0 if perm is None else perm.shape[1]
            if n != len(files):
                raise DatasetError(
                    f"{perm_file}: rand_perm_cam{{{cam}}}{{{pid}}} permutes {n} images, but the gallery "
                    f"candidates hold {len(files)} images of id {pid} in cam{cam} "
                    f"({os.path.join(split.root, f'cam{cam}', f'{pid:04d}')}); the .mat file and the "
                    f"tree disagree"
                )
            if perm is None:
                continue
            chosen.extend(files[j - 1][1] for j in perm[int(trial), : int(shot)])
    return chosen


def _infer_sysu_root(records: Sequence[Record]) -> str:
    """SYSU-MM01 root of records read by ``read_sysu_mm01`` (``ROOT/camC/PPPP/file``)."""
    roots = {str(Path(r.path).parents[2]) for r in records}
    if len(roots) != 1:
        raise ValueError(
            f"protocol='official': cannot infer the SYSU-MM01 root from the records (they lie under "
            f"{sorted(roots)[:3]}); pass root="
        )
    return roots.pop()
