"""Writing the synthetic datasets in the real layouts (SYSU-MM01, SYSU-MM02, RegDB, Market-1501)
and the command line (``python -m cmamlib.data.synth``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .cameras import Camera, make_cameras
from .config import DOMAIN_CODES, PRESETS, SynthConfig
from .people import Identity, make_identity
from .render import render_image


# ----------------------------------------------------------------------------- writers
@dataclass(frozen=True)
class _Job:
    path: str
    domain: str
    pid: int
    cam: int
    index: int
    fmt: str = "JPEG"
    rng_cam: int | None = None  # camera of the image's random stream (None: ``cam``)
    view: str | None = None  # a walking sequence's view (None: drawn per image)
    phase: float | None = None  # a walking sequence's phase (None: drawn per image)


def job_rng(seed: int, job: _Job) -> np.random.Generator:
    """The random stream of one image: ``(seed, domain, pid, camera, index)``, where a paired
    thermal frame uses its visible twin's camera (``rng_cam``)."""
    rng_cam = job.cam if job.rng_cam is None else job.rng_cam
    return np.random.default_rng([seed, DOMAIN_CODES[job.domain], job.pid, rng_cam, job.index])


def _render_jobs(args: tuple[int, SynthConfig, list[_Job]]) -> int:
    seed, cfg, jobs = args
    idents: dict[tuple[str, int], Identity] = {}
    cams: dict[str, dict[int, Camera]] = {}
    for job in jobs:
        key = (job.domain, job.pid)
        if key not in idents:
            idents[key] = make_identity(seed, job.domain, job.pid, cfg)
        if job.domain not in cams:
            cams[job.domain] = make_cameras(seed, job.domain, cfg)
        rng = job_rng(seed, job)
        im = render_image(idents[key], cams[job.domain][job.cam], rng, cfg, view=job.view, phase=job.phase)
        Path(job.path).parent.mkdir(parents=True, exist_ok=True)
        if job.fmt == "JPEG":
            im.save(job.path, "JPEG", quality=cfg.jpeg_quality)
        else:
            im.save(job.path, job.fmt)
    return len(jobs)


def _sysu_plan(root: Path, seed: int, cfg: SynthConfig) -> tuple[list[_Job], dict]:
    rng = np.random.default_rng([seed, 101])
    pids = np.sort(rng.choice(np.arange(1, 1000), cfg.sysu_ids, replace=False))
    perm = rng.permutation(pids)
    test = np.sort(perm[: cfg.sysu_test_ids])
    val = np.sort(perm[cfg.sysu_test_ids : cfg.sysu_test_ids + cfg.sysu_val_ids])
    train = np.sort(perm[cfg.sysu_test_ids + cfg.sysu_val_ids :])
    jobs: list[_Job] = []
    vis_cams, ir_cams = [1, 2, 4, 5], [3, 6]
    for pid in pids:
        r = np.random.default_rng([seed, 102, int(pid)])
        present_v = [c for c in vis_cams if r.random() < cfg.cam_presence]
        present_i = [c for c in ir_cams if r.random() < cfg.cam_presence]
        while len(present_v) < 2:
            present_v = sorted(set(present_v) | {int(r.choice(vis_cams))})
        if not present_i:
            present_i = [int(r.choice(ir_cams))]
        for c in sorted(present_v + present_i):
            n = cfg.sysu_vis_per_cam if c in vis_cams else cfg.sysu_ir_per_cam
            for k in range(n):
                p = root / f"cam{c}" / f"{int(pid):04d}" / f"{k + 1:04d}.jpg"
                jobs.append(_Job(str(p), "sysu", int(pid), c, k))
    meta = {"train": train.tolist(), "val": val.tolist(), "test": test.tolist()}
    return jobs, meta


def _regdb_plan(root: Path, seed: int, cfg: SynthConfig) -> tuple[list[_Job], list[tuple[str, int, int]]]:
    """RegDB-synth's images: with ``regdb_sequence`` each person's images are the frames of
    one walk past the dual camera, as RegDB was captured: one view (towards the camera,
    ``front``, or away from it, ``back``, as the file name says), the walking phase
    advancing frame by frame; otherwise views are drawn per image (the earlier generator)."""
    jobs: list[_Job] = []
    entries: list[tuple[str, int, int]] = []  # (relative path, pid, cam)
    serial = 0
    for pid in range(1, cfg.regdb_ids + 1):
        gender = "female" if np.random.default_rng([seed, 201, pid]).random() < 0.4 else "male"
        walk = np.random.default_rng([seed, 203, pid])
        walk_view = "front" if walk.random() < 0.5 else "back"
        phase0, step = walk.uniform(0, 2 * math.pi), walk.uniform(0.5, 0.9)
        for cam, mod, tag, folder in ((1, "v", "v", "Visible"), (2, "t", "t", "Thermal")):
            for k in range(cfg.regdb_per_modality):
                serial += 1
                if cfg.regdb_sequence:
                    view, phase = walk_view, phase0 + k * step
                else:
                    view, phase = ("front" if k % 2 == 0 else "back"), None
                rel = f"{folder}/{pid}/{gender}_{view}_{tag}_{serial:05d}_{pid}.bmp"
                # a paired thermal image replays its visible twin's draws (pose, view, window)
                jobs.append(
                    _Job(
                        str(root / rel),
                        "regdb",
                        pid,
                        cam,
                        k,
                        fmt="BMP",
                        rng_cam=1 if cfg.regdb_paired else None,
                        view=view if cfg.regdb_sequence else None,
                        phase=phase,
                    )
                )
                entries.append((rel, pid, cam))
    return jobs, entries


def _market_plan(root: Path, seed: int, cfg: SynthConfig) -> list[_Job]:
    rng = np.random.default_rng([seed, 301])
    n = cfg.market_train_ids + cfg.market_test_ids
    pids = np.sort(rng.choice(np.arange(1, 1500), n, replace=False))
    perm = rng.permutation(pids)
    test = set(int(p) for p in perm[: cfg.market_test_ids])
    jobs: list[_Job] = []
    frame = 0
    for pid in pids:
        pid = int(pid)
        r = np.random.default_rng([seed, 302, pid])
        cams = sorted(int(c) for c in r.choice(np.arange(1, 7), int(r.integers(2, 7)), replace=False))
        for ci, c in enumerate(cams):
            for k in range(cfg.market_per_cam + (1 if pid in test else 0)):
                frame += int(r.integers(5, 60))
                seq = int(r.integers(1, 7))
                name = f"{pid:04d}_c{c}s{seq}_{frame:06d}_{k + 1:02d}.jpg"
                if pid in test:
                    folder = "query" if (k == 0 and ci < 2) else "bounding_box_test"
                else:
                    folder = "bounding_box_train"
                jobs.append(_Job(str(root / folder / name), "market", pid, c, k))
    # Distractors (pid 0000) and junk (pid -1) in the gallery, as Market-1501 ships them.
    for k in range(max(2, cfg.market_test_ids // 6)):
        r = np.random.default_rng([seed, 303, k])
        c = int(r.integers(1, 7))
        frame += 7
        pid_d = 1500 + k  # rendered as an unseen person, named as a distractor
        jobs.append(_Job(str(root / "bounding_box_test" / f"0000_c{c}s1_{frame:06d}_00.jpg"), "market", pid_d, c, 0))
        jobs.append(_Job(str(root / "bounding_box_test" / f"-1_c{c}s1_{frame:06d}_00.jpg"), "market", pid_d, c, 1))
    return jobs


# ----------------------------------------------------------------------------- SYSU-MM01 official split
MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file, written by cmamlib.data.synth"
"""Fixed text of the 116-byte MAT-file header (scipy writes the creation time there,
which would make the files differ from run to run)."""


def _mat_bytes(variables: dict) -> bytes:
    """A MATLAB 5 .mat file of ``variables`` (scipy ``savemat``) with a fixed header text."""
    import io

    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, variables, do_compression=False)
    data = buf.getvalue()
    return MAT_DESCRIPTION.ljust(116, b" ") + data[116:]


def write_sysu_mm01_official(root: str | os.PathLike, seed: int = 0, trials: int = 10) -> dict:
    """Write ``exp/rand_perm_cam.mat`` and ``exp/test_id.mat`` for a SYSU-MM01 tree on disk.

    The structure is the real dataset's, as its authors' evaluation code reads it
    (``scipy.io.loadmat(...)["rand_perm_cam"][cam - 1][0].squeeze()[pid - 1][trial]``):
    ``rand_perm_cam`` is a 6 x 1 cell (cameras 1..6) of N x 1 cells (ids 1..N, N the
    largest id of ``exp/{train,val,test}_id.txt``; 533 in the real file), each a
    ``trials x n`` double matrix whose rows are random permutations of ``1..n`` over the
    ``n`` images of ``camC/PPPP`` in sorted file order, or an empty 0 x 0 matrix where
    the folder does not exist; ``test_id.mat`` holds ``id``, a 1 x T double row of the
    ids of ``exp/test_id.txt``. Each permutation draws from its own generator seeded with
    ``(seed, cam, pid)``, and the header text is fixed, so the bytes depend only on the
    tree and the seed.

    Args:
        root: a SYSU-MM01-layout folder (``cam1..cam6/``, ``exp/*_id.txt``).
        seed: master seed.
        trials: rows of every permutation matrix (10, as the real file).

    Returns:
        ``{"ids": N, "test_ids": T, "trials": trials}``.
    """
    root = Path(root)
    exp = root / "exp"

    def ids_of(name: str) -> list[int]:
        return [int(t) for t in (exp / name).read_text().strip().strip(",").split(",") if t.strip()]

    test_ids = ids_of("test_id.txt")
    n_ids = max(max(ids_of(f)) for f in ("train_id.txt", "val_id.txt", "test_id.txt"))
    cells = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        per_id = np.empty((n_ids, 1), dtype=object)
        for pid in range(1, n_ids + 1):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            n = len([p for p in folder.iterdir() if p.suffix.lower() == ".jpg"]) if folder.is_dir() else 0
            if n == 0:
                per_id[pid - 1, 0] = np.zeros((0, 0))
                continue
            rng = np.random.default_rng([seed, DOMAIN_CODES["sysu"], 555, cam, pid])
            per_id[pid - 1, 0] = np.stack([rng.permutation(n) + 1 for _ in range(trials)]).astype(np.float64)
        cells[cam - 1, 0] = per_id
    (exp / "rand_perm_cam.mat").write_bytes(_mat_bytes({"rand_perm_cam": cells}))
    (exp / "test_id.mat").write_bytes(_mat_bytes({"id": np.asarray([test_ids], dtype=np.float64)}))
    return {"ids": n_ids, "test_ids": len(test_ids), "trials": trials}


# ----------------------------------------------------------------------------- SYSU-MM02 layout
SYSU_MM02_RENDER_CAMS = {1: 1, 2: 3, 3: 6}
"""SYSU-MM02 file camera value -> the SYSU-synth camera that renders it (file cam 1
visible, 2 and 3 near-infrared: the reader's default mapping)."""


def sysu_mm02_sizes(cfg: SynthConfig) -> dict[str, int]:
    """Sizes of SYSU-MM02-synth derived from a preset (tiny: 6 test ids x (4 + 4),
    8 train ids; default: 30 test ids x (5 + 5), 60 train ids x (2 visible + 4 infrared)).
    """
    return {
        "test_ids": max(6, cfg.sysu_test_ids // 2),
        "test_per_modality": cfg.sysu_vis_per_cam + 2,
        "train_ids": max(8, cfg.sysu_test_ids),
        "train_visible_per_id": 2,
        "train_infrared_per_cam": 2,
    }


def _sysu_mm02_plan(root: Path, seed: int, cfg: SynthConfig) -> tuple[list[_Job], dict[str, list[str]]]:
    """Jobs and list lines of SYSU-MM02-synth (layout of the authors' code: ``train/``,
    ``test/``, ``train.txt``, ``test_rgb.txt``, ``test_ir.txt`` with ``path pid cam``).

    Rendered with the SYSU-synth cameras (:data:`SYSU_MM02_RENDER_CAMS`) and identities
    of their own (render ids 2001.. for test, 3001.. for train; SYSU-MM01-synth uses ids
    below 1000). Training file names carry no identity (shuffled serial numbers) and
    their list pid is the placeholder 0, as the real list's training pids mean nothing.
    """
    z = sysu_mm02_sizes(cfg)
    jobs: list[_Job] = []
    lines: dict[str, list[str]] = {"train.txt": [], "test_rgb.txt": [], "test_ir.txt": []}
    for pid in range(1, z["test_ids"] + 1):
        rpid = 2000 + pid
        for k in range(z["test_per_modality"]):
            rel = f"test/rgb/{pid:04d}_c1_{k + 1:03d}.jpg"
            jobs.append(_Job(str(root / rel), "sysu", rpid, SYSU_MM02_RENDER_CAMS[1], k))
            lines["test_rgb.txt"].append(f"{rel} {pid} 1")
        for k in range(z["test_per_modality"]):
            c = 2 + k % 2
            rel = f"test/ir/{pid:04d}_c{c}_{k + 1:03d}.jpg"
            jobs.append(_Job(str(root / rel), "sysu", rpid, SYSU_MM02_RENDER_CAMS[c], k))
            lines["test_ir.txt"].append(f"{rel} {pid} {c}")
    train: list[tuple[int, int, int]] = []  # (render pid, file cam, index)
    for j in range(1, z["train_ids"] + 1):
        train += [(3000 + j, 1, k) for k in range(z["train_visible_per_id"])]
        train += [(3000 + j, c, k) for c in (2, 3) for k in range(z["train_infrared_per_cam"])]
    order = np.random.default_rng([seed, DOMAIN_CODES["sysu"], 777]).permutation(len(train))
    for serial, i in enumerate(order, start=1):
        rpid, c, k = train[int(i)]
        rel = f"train/{'rgb' if c == 1 else 'ir'}/{serial:06d}.jpg"
        jobs.append(_Job(str(root / rel), "sysu", rpid, SYSU_MM02_RENDER_CAMS[c], k))
    entries = sorted((job.path, c) for job, (_, c, _) in zip(jobs[-len(train) :], (train[int(i)] for i in order)))
    lines["train.txt"] = [f"{Path(p).relative_to(root).as_posix()} 0 {c}" for p, c in entries]
    return jobs, lines


def _count_sysu_mm02(lines: dict[str, list[str]]) -> dict:
    train = [ln.split() for ln in lines["train.txt"]]
    return {
        "train": {"visible": sum(f[2] == "1" for f in train), "infrared": sum(f[2] != "1" for f in train)},
        "test": {
            "ids": len({ln.split()[1] for ln in lines["test_rgb.txt"]}),
            "visible": len(lines["test_rgb.txt"]),
            "infrared": len(lines["test_ir.txt"]),
        },
    }


def generate(
    out: str | os.PathLike,
    preset: str | SynthConfig = "default",
    seed: int = 0,
    workers: int | None = None,
    datasets: Sequence[str] = ("sysu", "regdb", "market", "sysumm02"),
    progress: bool = True,
) -> dict:
    """Write the synthetic benchmark under ``out`` and return a summary dict.

    Args:
        out: output folder; ``SYSU-MM01-synth/`` (with the official-protocol files
            ``exp/rand_perm_cam.mat`` and ``exp/test_id.mat``), ``RegDB-synth/``,
            ``Market-1501-synth/`` and ``SYSU-MM02-synth/`` are (re)written inside it.
        preset: ``"tiny"`` (tests, seconds), ``"small"`` or ``"default"``, or a
            :class:`SynthConfig`.
        seed: master seed; the same seed gives byte-identical files.
        workers: processes used to render (default: all cores); does not change output.
        datasets: subset of ``("sysu", "regdb", "market", "sysumm02")`` to write.
        progress: show a tqdm progress bar.

    Returns:
        ``{"preset", "seed", "counts": {...}, "seconds"}``; also written to
        ``out/synth_manifest.json``.
    """
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    unknown = set(datasets) - set(DOMAIN_CODES) - {"sysumm02"}
    if unknown:
        raise ValueError(
            f"unknown datasets {sorted(unknown)}; expected a subset of {sorted(DOMAIN_CODES) + ['sysumm02']}"
        )
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[_Job] = []
    counts: dict = {}
    if "sysu" in datasets:
        root = out / "SYSU-MM01-synth"
        _clean(root)
        sj, meta = _sysu_plan(root, seed, cfg)
        jobs += sj
        (root / "exp").mkdir(parents=True, exist_ok=True)
        for split in ("train", "val", "test"):
            (root / "exp" / f"{split}_id.txt").write_text(",".join(str(p) for p in meta[split]) + "\n")
        counts["SYSU-MM01-synth"] = _count_sysu(sj, meta)
    if "regdb" in datasets:
        root = out / "RegDB-synth"
        _clean(root)
        rj, entries = _regdb_plan(root, seed, cfg)
        jobs += rj
        _write_regdb_idx(root, entries, seed, cfg)
        counts["RegDB-synth"] = {
            "ids": cfg.regdb_ids,
            "visible": cfg.regdb_ids * cfg.regdb_per_modality,
            "thermal": cfg.regdb_ids * cfg.regdb_per_modality,
            "splits": 10,
        }
    if "market" in datasets:
        root = out / "Market-1501-synth"
        _clean(root)
        mj = _market_plan(root, seed, cfg)
        jobs += mj
        counts["Market-1501-synth"] = _count_market(mj)
    if "sysumm02" in datasets:  # SYSU-MM02 layout, rendered by the SYSU-synth cameras
        root = out / "SYSU-MM02-synth"
        _clean(root)
        sj2, lines = _sysu_mm02_plan(root, seed, cfg)
        jobs += sj2
        root.mkdir(parents=True, exist_ok=True)
        for name, ls in lines.items():
            (root / name).write_text("\n".join(ls) + "\n")
        counts["SYSU-MM02-synth"] = _count_sysu_mm02(lines)
    workers = workers or os.cpu_count() or 1
    chunks = [jobs[i : i + 64] for i in range(0, len(jobs), 64)]
    bar = _tqdm(total=len(jobs), desc="rendering", disable=not progress)
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as ex:
            for n in ex.map(_render_jobs, [(seed, cfg, c) for c in chunks]):
                bar.update(n)
    else:
        for c in chunks:
            bar.update(_render_jobs((seed, cfg, c)))
    bar.close()
    if "sysu" in datasets:  # the official-protocol files need the rendered tree
        write_sysu_mm01_official(out / "SYSU-MM01-synth", seed)
    summary = {
        "preset": preset if isinstance(preset, str) else "custom",
        "seed": seed,
        "config": asdict(cfg),
        "counts": counts,
        "images": len(jobs),
        "seconds": round(time.time() - t0, 2),
    }
    # The manifest's timing varies between runs; it sits beside the trees, not inside them.
    (out / "synth_manifest.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _tqdm(**kw):
    from tqdm.auto import tqdm

    return tqdm(**kw)


def _clean(root: Path) -> None:
    """Remove a previously generated tree (only files this generator writes)."""
    if not root.exists():
        return
    for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file() and p.suffix.lower() in (".jpg", ".bmp", ".txt", ".mat"):
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def _count_sysu(jobs: list[_Job], meta: dict) -> dict:
    split_of = {p: s for s in ("train", "val", "test") for p in meta[s]}
    c: dict = {}
    for s in ("train", "val", "test"):
        js = [j for j in jobs if split_of[j.pid] == s]
        c[s] = {
            "ids": len(meta[s]),
            "visible": sum(j.cam not in (3, 6) for j in js),
            "infrared": sum(j.cam in (3, 6) for j in js),
        }
    return c


def _count_market(jobs: list[_Job]) -> dict:
    c: dict = {}
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        js = [j for j in jobs if Path(j.path).parent.name == folder]
        names = [Path(j.path).name.split("_")[0] for j in js]
        c[folder] = {"images": len(js), "ids": len({n for n in names if n not in ("0000", "-1")})}
    return c


def _write_regdb_idx(root: Path, entries: list[tuple[str, int, int]], seed: int, cfg: SynthConfig) -> None:
    """10 random half/half identity splits, RegDB's ``idx/`` list files."""
    idx = root / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    pids = np.arange(1, cfg.regdb_ids + 1)
    for trial in range(1, 11):
        rng = np.random.default_rng([seed, 202, trial])
        perm = rng.permutation(pids)
        half = cfg.regdb_ids // 2
        split_ids = {"train": set(perm[:half].tolist()), "test": set(perm[half:].tolist())}
        for split, ids in split_ids.items():
            for cam, name in ((1, "visible"), (2, "thermal")):
                lines = [f"{rel} {pid - 1}" for rel, pid, c in entries if c == cam and pid in ids]
                (idx / f"{split}_{name}_{trial}.txt").write_text("\n".join(lines) + "\n")


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write the synthetic visible-infrared Re-ID benchmark.")
    ap.add_argument("--out", required=True, help="output folder (e.g. data)")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--datasets", default="sysu,regdb,market,sysumm02", help="comma-separated subset of sysu,regdb,market,sysumm02"
    )
    args = ap.parse_args(list(argv) if argv is not None else None)
    s = generate(args.out, args.preset, args.seed, args.workers, tuple(args.datasets.split(",")))
    print(json.dumps({k: s[k] for k in ("preset", "seed", "images", "seconds", "counts")}, indent=2))


if __name__ == "__main__":
    main()
