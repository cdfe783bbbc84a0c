"""Results on disk: one JSON file per result, written atomically, read back into its dataclass; and the one
loader that turns any results folder into a DataFrame whose columns are the dataclasses' field names."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

import pandas as pd

from .schema import RESULT_KINDS, SCHEMA_VERSION, STATUSES, Result


def to_dict(result: Result) -> dict[str, Any]:
    return {"kind": result.kind, **dataclasses.asdict(result)}


def write_result(path: Path, result: Result) -> None:
    """Write to a temporary file and rename: a killed run never leaves a half-written result. A result whose `arch`
    disagrees with the family its own config trained is refused: the tables group rows by `arch`."""
    train = result.config.get("train", result.config)
    if isinstance(train, dict) and train.get("arch", result.arch) != result.arch:
        raise ValueError(f"{path}: the result says arch {result.arch!r}, its config trained {train['arch']!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(to_dict(result), indent=1, default=str))
    tmp.replace(path)


def _dataclass_type(hint: Any) -> type | None:
    """The dataclass in a field's type hint (`X` or `X | None`), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
    return None


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild dataclass `cls` (and the dataclasses nested in it) from `asdict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    values = {}
    for name, value in data.items():
        nested = _dataclass_type(hints[name])
        values[name] = from_dict(nested, value) if nested is not None and isinstance(value, dict) else value
    return cls(**values)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A result's dict of schema 2 as schema 3 (in memory; files stay as written): a training window's `trial`
    (its position among its row's consecutive windows) becomes its `round`, unpaired (no `role`)."""
    if data.get("schema_version") == 2:
        data = {**data, "schema_version": 3}
        if data.get("kind") == "trial":
            data["round"] = data.pop("trial")
    return data


def read_result(path: Path) -> Result:
    """The result in `path`, as its dataclass; `ValueError` naming the file for other schemas or kinds."""
    data = upgrade(json.loads(Path(path).read_text()))
    version, kind = data.get("schema_version"), data.pop("kind", None)
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {version!r}, this attnlib reads {SCHEMA_VERSION} (and 2)")
    if kind not in RESULT_KINDS:
        raise ValueError(f"{path}: unknown result kind {kind!r} (known: {', '.join(RESULT_KINDS)})")
    return from_dict(RESULT_KINDS[kind], data)


def finished_result(path: Path) -> Result | None:
    """The result in `path` if it is readable and has a recorded status (a failure is a result, too), else None:
    what a resumed job keeps instead of measuring again."""
    try:
        result = read_result(path)
    except (OSError, ValueError, TypeError):
        return None
    return result if result.status in STATUSES else None


def set_aside(paths: typing.Iterable[Path]) -> list[Path]:
    """Move those of `paths` that exist into a `superseded/` folder beside them, each name suffixed with the time
    it was measured, and return where they went. A cell whose rounds are measured again together (they share one
    steady state) keeps the partial windows it had instead of overwriting them; the loader reads `raw/*.json` only."""
    moved = []
    for path in map(Path, paths):
        if not path.exists():
            continue
        try:
            created = json.loads(path.read_text()).get("provenance", {}).get("created") or "undated"
        except (OSError, ValueError):
            created = "unreadable"
        stamp = "".join(ch for ch in created if ch.isalnum())
        target = path.parent / "superseded" / f"{path.stem}__{stamp}{path.suffix}"
        target.parent.mkdir(exist_ok=True)
        path.replace(target)
        moved.append(target)
    return moved


def is_complete(path: Path) -> bool:
    return finished_result(path) is not None


def read_run(results_dir: Path) -> dict[str, Any]:
    """A results folder's `run.json` (`{}` without one): its device, chunks, `minutes` of device time (on a GPU,
    GPU minutes; `gpu_minutes` in files written before the key was renamed) and measured fraction."""
    path = Path(results_dir) / "run.json"
    run = json.loads(path.read_text()) if path.exists() else {}
    if "gpu_minutes" in run:
        run["minutes"] = run.pop("gpu_minutes")
    return run


def newest_result_epoch(results_dir: Path) -> int:
    """Unix time of the newest result's creation in `results_dir` (0 without results): the date a document built
    from them carries, the same on every rebuild."""
    import datetime

    created = [r.provenance.created for r in load_results(results_dir) if r.provenance is not None]
    return int(datetime.datetime.fromisoformat(max(created)).timestamp()) if created else 0


def load_results(results_dir: Path) -> list[Result]:
    return [read_result(p) for p in sorted(Path(results_dir).glob("raw/*.json"))]


def flatten(obj: Any) -> dict[str, Any]:
    """One flat row: nested dataclasses' fields become columns under their own names; where a nested name is
    already taken (`status`, `error` of the window), the outer field keeps it."""
    row: dict[str, Any] = {}
    nested = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            nested.append(value)
        elif value is None and _dataclass_type(typing.get_type_hints(type(obj))[f.name]) is not None:
            continue  # an absent part (a failed job's measurement): its columns stay empty
        else:
            row[f.name] = value
    for value in nested:
        for name, inner in flatten(value).items():
            row.setdefault(name, inner)
    return row


def results_frame(results: list[Result] | Path) -> pd.DataFrame:
    """Every result as one row (`kind` + flattened fields); a folder is read with `load_results`, and one without
    results (missing, or nothing under raw/) is a `ValueError` that says so instead of an empty table."""
    if not isinstance(results, list):
        folder = Path(results)
        results = load_results(folder)
        if not results:
            state = "does not exist" if not folder.exists() else "holds no results (raw/*.json)"
            raise ValueError(f"results: {folder} {state}; measured folders are under results/ (e.g. results/paper), "
                             "and ./run_all.sh --profile smoke makes one on any machine")
    return pd.DataFrame([{"kind": r.kind, **flatten(r)} for r in results])
