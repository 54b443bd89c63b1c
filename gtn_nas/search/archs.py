"""The architectures a user names for retraining: a genotype string, a search's ``top/NN.json``
(with the data set and sizes it was scored at), or the best K of a search directory."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import get_space
from search_spaces.micro import EXAMPLE as MICRO_EXAMPLE
from search_spaces.micro import MicroGenotype
from search_spaces.nb201 import EXAMPLE as NB201_EXAMPLE

from gtn_nas.errors import ArchitectureError
from gtn_nas.io.data.base import DATASETS
from gtn_nas.io.files import read_json


@dataclass(frozen=True)
class ArchSpec:
    """One architecture to retrain: its canonical genotype string and space, and its origin."""

    arch: str
    space: str
    origin: str
    rank: int = 1
    dataset: str | None = None  # what the search scored it on (a search's JSON or leaderboard)
    channels: int | None = None  # the sizes it was scored at
    cells: int | None = None


_ARCH_KEYS = ("arch", "genotype", "architecture", "arch_str", "genotype_str")
_SPACE_KEYS = ("space", "search_space")


def parse_arch(s: str, space: str | None = None):
    """(genotype, space name) from a genotype string; the space is inferred when not given."""
    if not isinstance(s, str) or not s.strip():
        raise ArchitectureError("empty architecture string; pass --arch with a genotype string, "
                                "a top/NN.json file or a search directory with --top K")
    if space is None:
        t = s.strip()
        if t.startswith("|"):
            space = "nb201"
        elif t.lower().startswith("normal"):
            space = "micro"
        else:
            raise ArchitectureError(
                f"cannot tell the search space of {s!r}: an NB201 cell reads like {NB201_EXAMPLE}, "
                f"a micro genotype like '{MICRO_EXAMPLE}'")
    sp = get_space(space)
    return sp.from_str(s), sp.name


def _spec_from_mapping(obj: Any, where: str, space: str | None, rank: int) -> ArchSpec:
    if not isinstance(obj, dict):
        raise ArchitectureError(f"{where} holds a {type(obj).__name__}, not a JSON object with "
                                f"an 'arch' field")
    value = next((obj[k] for k in _ARCH_KEYS if obj.get(k) not in (None, "")), None)
    if value is None:
        raise ArchitectureError(f"{where} has no genotype: expected a string field 'arch' "
                                f"(or {', '.join(repr(k) for k in _ARCH_KEYS[1:])}); "
                                f"found {', '.join(sorted(map(str, obj))) or 'no fields'}")
    given = space or next((obj[k] for k in _SPACE_KEYS if obj.get(k)), None)
    if isinstance(value, dict) and "normal" in value and "reduce" in value:  # a micro DAG
        try:
            value = MicroGenotype(tuple(value["normal"]), tuple(value["reduce"])).to_str()
        except (TypeError, ValueError) as e:
            raise ArchitectureError(f"{where}: bad micro genotype ({e})") from None
        given = given or "micro"
    if not isinstance(value, str):
        raise ArchitectureError(f"{where}: the genotype must be a string, got {value!r:.80}")
    try:
        genotype, name = parse_arch(value, given)
    except ArchitectureError as e:
        raise ArchitectureError(f"{where}: {e}") from None
    sizes = obj.get("sizes") if isinstance(obj.get("sizes"), dict) else {}
    dataset = obj.get("dataset") if obj.get("dataset") in DATASETS else None
    whole = lambda v: v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None  # noqa: E731
    return ArchSpec(genotype.to_str(), name, where, rank, dataset, whole(sizes.get("channels")),
                    whole(sizes.get("cells")))


def _rank_of(path: Path, default: int) -> int:
    m = re.search(r"(\d+)", path.stem)
    return int(m.group(1)) if m else default


def _from_search_dir(folder: Path, top: int, space: str | None) -> list[ArchSpec]:
    files = sorted((folder / "top").glob("*.json"), key=lambda p: (_rank_of(p, 10**9), p.name))
    if files:
        specs = []
        for i, p in enumerate(files[:top]):
            obj = read_json(p)
            rank = obj.get("rank") if isinstance(obj, dict) else None
            rank = rank if isinstance(rank, int) and rank > 0 else _rank_of(p, i + 1)
            specs.append(_spec_from_mapping(obj, str(p), space, rank))
        return specs
    board = folder / "leaderboard.csv"
    if board.is_file():
        with board.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [_spec_from_mapping(dict(r), f"{board} row {i + 1}", space, i + 1)
                for i, r in enumerate(rows[:top])]
    raise ArchitectureError(f"{folder} has neither top/*.json nor leaderboard.csv; pass the --out "
                            "directory of `gtn-nas search`")


def _kind(path: Path) -> str | None:
    """'dir', 'file' or None; a string too long to be a file name is not one (no OSError)."""
    try:
        return "dir" if path.is_dir() else "file" if path.is_file() else None
    except OSError:
        return None


def resolve_archs(arch: str, space: str | None = None, top: int | None = None) -> list[ArchSpec]:
    """The architectures ``--arch`` names: a genotype string, a JSON file with an ``arch`` field
    (and optionally ``space``), or the best ``top`` of a search directory (``top/NN.json`` in rank
    order, else the first rows of ``leaderboard.csv``)."""
    arch = (arch or "").strip()
    if not arch:
        raise ArchitectureError("no architecture: pass --arch with a genotype string, a "
                                "top/NN.json file, or a search directory with --top K")
    looks_like_path = "/" in arch or "\\" in arch or arch.lower().endswith(".json")
    path = Path(arch).expanduser()
    kind = _kind(path)
    if top is not None:
        if kind != "dir":
            raise ArchitectureError(f"--top needs a search directory as --arch; {arch!r} is not "
                                    "a directory")
        specs = _from_search_dir(path, top, space)
        if not specs:
            raise ArchitectureError(f"{path} lists no architectures")
        return specs
    if kind == "dir":
        raise ArchitectureError(f"{arch} is a directory; pass --top K to retrain the best K "
                                "architectures of a search, or a top/NN.json file")
    if kind == "file" or looks_like_path:
        if kind != "file":
            raise ArchitectureError(f"architecture file {arch} does not exist")
        return [_spec_from_mapping(read_json(path), str(path), space, _rank_of(path, 1))]
    genotype, name = parse_arch(arch, space)
    return [ArchSpec(genotype.to_str(), name, "command line")]


__all__ = ["ArchSpec", "parse_arch", "resolve_archs"]
