"""FSCIL protocols and their index files (the TOPIC/CEC ``session_<t>.txt`` format).

A protocol is a base session of many classes with full data, then incremental N-way K-shot sessions. Which images a
few-shot session trains on is fixed by a list file, not by a seed: ``session_<t>.txt`` (t counted from 1; t = 1 is
the base session) holds one image per line, written as the dataset's loader understands it (an integer index into
the training set for CIFAR-100 and fscil-tiny, ``.../<wnid>/<file>.jpg`` for miniImageNet, a path relative to the
data root for CUB-200). As in CEC's own loaders, the base session trains on every training image of the base
classes, so ``session_1.txt`` is optional; when present it is used instead.

The lists in ``scenarios/fscil_index/{cifar100,mini_imagenet,cub200}`` are the incremental-session files of CEC
(Zhang et al., CVPR 2021; github.com/icoz69/CEC-CVPR2021 ``data/index_list``, MIT licence), themselves TOPIC's
(Tao et al., CVPR 2020). Protocol numbers: ../shared/reference/benchmarks.md §5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INDEX_ROOT = Path(__file__).resolve().parent / "fscil_index"


@dataclass(frozen=True)
class Protocol:
    """Class counts of an FSCIL protocol. Classes are taken in ``class_order``: the first ``base_classes`` form
    the base session, then ``ways`` per incremental session."""

    name: str
    num_classes: int
    base_classes: int
    ways: int
    shots: int
    sessions: int  # including the base session

    def __post_init__(self) -> None:
        if self.base_classes + (self.sessions - 1) * self.ways != self.num_classes:
            raise ValueError(f"protocol {self.name}: {self.base_classes} base + {self.sessions - 1} x {self.ways} "
                             f"ways != {self.num_classes} classes")  # fmt: skip

    def session_classes(self, class_order: Sequence[int] | None = None) -> list[tuple[int, ...]]:
        """The global class ids each session introduces (session 0 = base)."""
        order = list(range(self.num_classes)) if class_order is None else list(class_order)
        if sorted(order) != list(range(self.num_classes)):
            raise ValueError(f"class_order must be a permutation of 0..{self.num_classes - 1}")
        out = [tuple(order[: self.base_classes])]
        for s in range(1, self.sessions):
            start = self.base_classes + (s - 1) * self.ways
            out.append(tuple(order[start : start + self.ways]))
        return out


PROTOCOLS = {
    "cifar100": Protocol("cifar100", num_classes=100, base_classes=60, ways=5, shots=5, sessions=9),
    "mini_imagenet": Protocol("mini_imagenet", num_classes=100, base_classes=60, ways=5, shots=5, sessions=9),
    "cub200": Protocol("cub200", num_classes=200, base_classes=100, ways=10, shots=5, sessions=11),
    "fscil_tiny": Protocol("fscil_tiny", num_classes=20, base_classes=10, ways=2, shots=5, sessions=6),
}


def index_dir(name: str, override: str | Path = "") -> Path:
    """The folder of a protocol's session files: ``override`` if given, else the bundled one."""
    path = Path(override).expanduser() if override else INDEX_ROOT / name
    if not path.is_dir():
        raise FileNotFoundError(f"FSCIL index folder {path} does not exist; it must hold session_<t>.txt files")
    return path


def session_file(folder: Path, session: int) -> Path:
    """Path of the list for ``session`` (0 = base), named as CEC names it (``session_<session + 1>.txt``)."""
    return folder / f"session_{session + 1}.txt"


def read_session(folder: Path, session: int) -> list[str] | None:
    """The non-empty lines of a session's list, or None when the file is absent (allowed for the base only)."""
    path = session_file(folder, session)
    if not path.exists():
        if session == 0:
            return None
        raise FileNotFoundError(f"missing FSCIL index file {path}: one image per line for session {session}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_sessions(folder: Path, sessions: Sequence[Sequence[object]], first: int = 0) -> list[Path]:
    """Write one list file per session, starting at session ``first`` (1 skips the optional base list)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, items in enumerate(sessions, start=first):
        path = session_file(folder, s)
        path.write_text("".join(f"{item}\n" for item in items))
        paths.append(path)
    return paths


def check_session(labels: Sequence[int], expected: Sequence[int], shots: int, where: Path) -> None:
    """A few-shot list must hold exactly ``shots`` images of each of the session's classes and nothing else."""
    counts: dict[int, int] = {}
    for label in labels:
        counts[int(label)] = counts.get(int(label), 0) + 1
    want = {int(c): shots for c in expected}
    if counts != want:
        raise ValueError(f"{where}: expected {shots} images of each class {sorted(want)}, "
                         f"found {dict(sorted(counts.items()))}")  # fmt: skip
