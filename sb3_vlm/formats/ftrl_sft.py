"""FTRL's supervised data set (docs/compat/ftrl.md §2.8), read (SFT JSON or per-actor ``data.csv``) and written
(:class:`SFTWriter`, :func:`write_sft_json`); the columns and their quirks:
docs/guide/supervised.md "FTRL's data set files"."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sb3_vlm._constants import VELOCITY_OUTPUTS
from sb3_vlm.formats.ftrl_files import atomic_write
from sb3_vlm.formats.trajectories import natural_key, resize_image

__all__ = [
    "CSV_COLUMNS",
    "DATA_CSV",
    "SFT_JSON",
    "FTRLSFTData",
    "FTRLSFTError",
    "SFTWriter",
    "read_ftrl_sft",
    "write_sft_json",
]

DATA_CSV = "data.csv"
SFT_JSON = "sft_data.json"
"""Name :func:`write_sft_json` gives the JSON by default."""
CSV_COLUMNS = {"inflation_radius": "final_inflation", "next_linear_vel": "next_linear_vel:"}
"""Label name -> FTRL's ``data.csv`` column, where they differ."""
DEFAULT_METHOD = "HB"
"""FTRL's heuristic expert, the image prefix when a CSV has no ``Method`` column."""
_REQUIRED_KEYS = ("id", "images", "parameters", "conversations", "system_prompt")
_INDENT = "    "


class FTRLSFTError(ValueError):
    """An FTRL SFT file that cannot be read: names the file, the sample or column, what was expected and got."""


@dataclass
class FTRLSFTData:
    """Samples read by :func:`read_ftrl_sft`.

    :param images: ``[N, 3, H, W]`` uint8, channel-first, resized (Pillow bilinear) to the requested size.
    :param labels: ``[N, P]`` float64, physical units.
    :param groups: ``[N]`` int, the actor directory of each sample.
    :param names: The ``P`` label names.
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    names: tuple[str, ...]


def _load_image(path: Path, size: tuple[int, int], source: str) -> np.ndarray:
    try:
        if not path.is_file():
            raise FTRLSFTError(f"{source}: image {path} not found")
        with Image.open(path) as image:
            return resize_image(image, size).transpose(2, 0, 1)
    except FTRLSFTError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # OSError: also a name too long to stat
        raise FTRLSFTError(f"{source}: image {path} cannot be read: {e}") from e


def _read_json(path: Path, image_folder: Path, size: tuple[int, int], planner_names: Sequence[str]) -> FTRLSFTData:
    try:
        samples = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise FTRLSFTError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(samples, list) or not samples:
        raise FTRLSFTError(f"{path}: expected a non-empty list of samples, got {type(samples).__name__}")
    names = tuple(planner_names) + VELOCITY_OUTPUTS  # FTRL's SFT labels: the parameters, then the two velocities
    images, labels, actors = [], [], []
    for i, sample in enumerate(samples):
        where = f"{path}, sample {i}"
        if not isinstance(sample, dict):
            raise FTRLSFTError(f"{where}: expected an object, got {type(sample).__name__}")
        where = f"{path}, sample {i} (id {sample.get('id')!r})"
        missing = [key for key in _REQUIRED_KEYS if key not in sample]
        if missing:
            raise FTRLSFTError(f"{where}: missing field(s) {missing}; expected {list(_REQUIRED_KEYS)}")
        if not isinstance(sample["images"], list) or not sample["images"] or not isinstance(sample["images"][0], str):
            raise FTRLSFTError(f"{where}, field 'images': expected a list of relative paths, got {sample['images']!r}")
        params = sample["parameters"]
        if not isinstance(params, list) or not all(_finite_number(x) for x in params):
            raise FTRLSFTError(f"{where}, field 'parameters': expected a list of finite numbers, got {params!r:.120}")
        if len(params) != len(names):
            raise FTRLSFTError(
                f"{where}, field 'parameters': expected {len(names)} values ({', '.join(names)}), got {len(params)}"
            )
        relative = Path(sample["images"][0])
        images.append(_load_image(image_folder / relative, size, where))
        labels.append(params)
        actors.append(str(relative.parent))
    return FTRLSFTData(np.stack(images), np.asarray(labels, dtype=np.float64), _group_ids(actors), names)


def _finite_number(x: Any) -> bool:
    """An int or float (not a bool) that is finite as a float (a huge int is not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _image_file(row: dict[str, str], csv_path: Path, line: int) -> Path:
    label = (row.get("img_label") or "").strip()
    if re.fullmatch(r"\d{1,9}(\.0*)?", label):
        method = (row.get("Method") or DEFAULT_METHOD).strip()
        return csv_path.parent / f"{method}_{int(float(label)):06d}.png"
    if label.endswith(".png") and "/" not in label:
        return csv_path.parent / label
    raise FTRLSFTError(
        f"{csv_path}, line {line}, column 'img_label': expected a frame number or a PNG name, got {label!r}"
    )


def _read_csvs(files: Sequence[Path], size: tuple[int, int], planner_names: Sequence[str]) -> FTRLSFTData:
    names = tuple(planner_names) + VELOCITY_OUTPUTS
    columns = [CSV_COLUMNS.get(name, name) for name in names]
    images, labels, actors = [], [], []
    for csv_path in files:
        try:
            _read_csv(csv_path, columns, size, (images, labels, actors))
        except (UnicodeDecodeError, csv.Error) as e:
            raise FTRLSFTError(f"{csv_path}: not a readable CSV file: {e}") from e
    if not labels:
        raise FTRLSFTError(f"{', '.join(map(str, files))}: no rows")
    return FTRLSFTData(np.stack(images), np.asarray(labels, dtype=np.float64), _group_ids(actors), names)


def _read_csv(csv_path: Path, columns: Sequence[str], size: tuple[int, int], into: tuple[list, list, list]) -> None:
    """Append one ``data.csv``'s images, labels and actor to the lists ``into``."""
    images, labels, actors = into
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ["img_label", *columns] if c not in header]
        if missing:
            raise FTRLSFTError(
                f"{csv_path}: missing column(s) {missing}; expected 'img_label' and {list(columns)} "
                f"(FTRL's names: {', '.join(f'{k} -> {v!r}' for k, v in CSV_COLUMNS.items())}), got {header}"
            )
        for line, row in enumerate(reader, start=2):
            values = [_cell_float(row, column, csv_path, line) for column in columns]
            images.append(_load_image(_image_file(row, csv_path, line), size, f"{csv_path}, line {line}"))
            labels.append(values)
            actors.append(str(csv_path.parent))


def _cell_float(row: dict[str, str], column: str, csv_path: Path, line: int) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise FTRLSFTError(f"{csv_path}, line {line}, column {column!r}: expected a number, got {row[column]!r}")
    return value


def _group_ids(keys: Sequence[str]) -> np.ndarray:
    order = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    return np.array([order[key] for key in keys], dtype=np.int64)


def read_ftrl_sft(
    path: str | os.PathLike,
    image_size: tuple[int, int],
    planner: str = "DWA",
    image_folder: str | os.PathLike | None = None,
) -> FTRLSFTData:
    """Read FTRL's SFT JSON, one ``data.csv``, or every ``actor_*/data.csv`` under a directory.

    :param path: ``.json`` file, ``.csv`` file or directory.
    :param image_size: ``(height, width)`` the images are resized to (the policy's observation size).
    :param planner: Planner whose parameters the labels are (``envs.planners.PARAM_TABLES`` key).
    :param image_folder: Root of the JSON's relative image paths (default: the JSON's directory).
    :raises FTRLSFTError: naming the file, sample/line and field for a missing image, column or bad value.
    :raises FileNotFoundError: if ``path`` does not exist.
    """
    from envs.planners import PARAM_TABLES  # the tables only, not the simulator

    planner_names = PARAM_TABLES[planner].names
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(f"actor_*/{DATA_CSV}"), key=natural_key)
        if not files:
            raise FTRLSFTError(f"{path}: no actor_*/{DATA_CSV} files (FTRL's per-actor SFT labels)")
        return _read_csvs(files, image_size, planner_names)
    if not path.is_file():
        raise FileNotFoundError(f"FTRL SFT data {path} not found")
    if path.suffix == ".csv":
        return _read_csvs([path], image_size, planner_names)
    if path.suffix == ".json":
        return _read_json(path, Path(image_folder) if image_folder else path.parent, image_size, planner_names)
    raise FTRLSFTError(f"{path}: expected a .json (FTRL SFT JSON), a data.csv or a directory of actor_*/data.csv")


# --------------------------------------------------------------------------------------------------------- writing


def _indented(text: str) -> str:
    """FTRL's SFT prompt form: every line indented by 4 spaces (blank lines too)."""
    return "\n".join(_INDENT + line for line in text.split("\n"))


class SFTWriter:
    """Appends one ``data.csv`` row per step to an actor directory (FTRL's columns, see the module docstring).

    :param actor_dir: ``<root>/actor_<k>``.
    :param planner_names: The planner's parameter names.
    :param method: Image name prefix of the frames (``<method>_<k:06d>.png``).
    """

    def __init__(self, actor_dir: Path, planner_names: Sequence[str], method: str):
        self.path = actor_dir / DATA_CSV
        self.method = method
        self.names = tuple(planner_names)
        self.columns = ["Method", "img_label", "linear_vel", "angular_vel"] + [
            CSV_COLUMNS.get(name, name) for name in self.names + VELOCITY_OUTPUTS
        ]

    def add(self, frame: int, params: np.ndarray, velocity: np.ndarray, next_velocity: np.ndarray) -> None:
        """One row: the frame the parameters ``[P]`` were chosen from, ``[v, w]`` at its start and end."""
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.columns)
            values = [*map(float, params), *map(float, next_velocity)]
            writer.writerow([self.method, frame, float(velocity[0]), float(velocity[1]), *values])


def write_sft_json(
    root: str | os.PathLike, planner: str, planner_names: Sequence[str], out: Path | None = None
) -> Path:
    """Every ``actor_*/data.csv`` under ``root`` as FTRL's SFT JSON (images relative to ``root``), atomically.

    :param planner: Planner name in the prompt (upper case, e.g. ``DWA``).
    :param out: JSON file (default ``<root>/sft_data.json``).
    """
    from sb3_vlm.model.backbone import FTRL_SYSTEM_PROMPT, FTRL_USER_PROMPT

    root = Path(root)
    system = "\n" + _indented(FTRL_SYSTEM_PROMPT) + "\n\n"
    columns = [CSV_COLUMNS.get(name, name) for name in tuple(planner_names) + VELOCITY_OUTPUTS]
    samples = []
    for csv_path in sorted(root.glob(f"actor_*/{DATA_CSV}"), key=natural_key):
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            k = int(row["img_label"])
            params = [float(row[c]) for c in columns]
            user = FTRL_USER_PROMPT.format(
                linear_vel=float(row["linear_vel"]), angular_vel=float(row["angular_vel"]), algorithm=planner
            )
            samples.append(
                {
                    "id": f"{row['Method']}_{k:06d}",
                    "images": [f"{csv_path.parent.name}/{row['Method']}_{k:06d}.png"],
                    "parameters": params,
                    "conversations": ["<image>\n" + _indented(user)],
                    "system_prompt": system,
                }
            )
    out = root / SFT_JSON if out is None else out
    atomic_write(out, json.dumps(samples, indent=1).encode())
    return out
