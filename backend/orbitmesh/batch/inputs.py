"""``orbitmesh batch`` INPUTS -> the batch's items, in input order, every setting validated up front.

An input is an image file, a folder (its images, sorted by name), a ``.txt`` list of prompts (one a line;
blank lines and ``#`` lines ignored) or a ``.csv`` / ``.jsonl`` manifest: one item a row, with an ``image`` or a
``prompt`` and any generate setting (a column / key named like the :class:`GenerateRequest` field). The
command-line settings are every item's defaults; a manifest row overrides them. Everything the user could
have mistyped (a missing input, an unknown column, a value out of range) is an :class:`InputError` that names
the file and line, raised before any job runs. An image that does not decode is not checked here: it becomes
a failed item when it runs, like any other job error.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from orbitmesh.errors import InputError
from orbitmesh.jobs import slugify
from orbitmesh.pipeline.request import GenerateRequest, check_setting, default_settings, settings_spec

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
PROMPT_LIST = ".txt"
MANIFESTS = (".csv", ".jsonl")
SOURCES = ("image", "prompt")  # the manifest columns naming an item's source
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class BatchItem:
    """One job of a batch: exactly one of ``image`` (an absolute path) / ``prompt``, and its full, validated
    generate settings (every :func:`settings_spec` name). ``origin`` says where it came from, for messages."""

    image: Path | None
    prompt: str | None
    settings: dict[str, Any]
    origin: str

    def request(self) -> GenerateRequest:
        """The job's request (no ``output``: the batch copies the GLB itself, the job may run elsewhere)."""
        return GenerateRequest(image_path=str(self.image) if self.image else None, prompt=self.prompt,
                               **self.settings)

    def input(self) -> dict[str, str]:
        """``{"image": path}`` or ``{"prompt": text}`` (batch.json's ``input``)."""
        return {"image": str(self.image)} if self.image is not None else {"prompt": str(self.prompt)}

    def base_name(self) -> str:
        """The output name before collisions are resolved: the image's stem, or a slug of the prompt."""
        if self.image is not None:
            return self.image.stem.strip() or "image"
        return slugify(self.prompt or "")


def check_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Every generate setting: ``values`` over the contract's defaults, validated (InputError naming the setting)."""
    merged = {**default_settings(), **values}
    GenerateRequest.from_settings(merged)  # unknown names and bad values raise here
    return merged


def collect_items(inputs: Sequence[str | os.PathLike], defaults: dict[str, Any]) -> list[BatchItem]:
    """INPUTS -> items in input order (a folder's images sorted by name). ``defaults``: every setting, validated
    (:func:`check_defaults`). Raises InputError for a missing input, an empty folder or list, or a bad manifest."""
    if isinstance(inputs, (str, os.PathLike)):  # one input, not a sequence of characters
        inputs = [inputs]
    if not inputs:
        raise InputError("no inputs given", fix="orbitmesh batch photos/ prompts.txt -o out/")
    items: list[BatchItem] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InputError(f"input not found: {raw}",
                             fix="give image files, folders, a .txt file of prompts or a .csv/.jsonl manifest")
        suffix = path.suffix.lower()
        if path.is_dir():
            items += _folder(path, defaults)
        elif suffix == PROMPT_LIST:
            items += _prompt_list(path, defaults)
        elif suffix in MANIFESTS:
            items += _manifest(path, defaults)
        else:  # any other file is an image; one that does not decode fails when it runs
            items.append(BatchItem(path.absolute(), None, dict(defaults), str(raw)))
    return items


def unique_names(items: Sequence[BatchItem]) -> list[str]:
    """The items' output names, unique in input order: chair, chair-2, chair-3 ... Compared without case, so
    that the GLBs stay apart on case-insensitive disks (macOS, Windows)."""
    taken: set[str] = set()
    names = []
    for item in items:
        base = item.base_name()
        name, n = base, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.lower())
        names.append(name)
    return names


# ----- the kinds of input ---------------------------------------------------------------------------------

def _folder(folder: Path, defaults: dict[str, Any]) -> list[BatchItem]:
    """The folder's image files (by extension, not recursive, hidden files left out), sorted by name."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise InputError(f"cannot list the folder {folder}: {exc.strerror or exc}",
                         fix="check the folder's permissions") from None
    images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
              and p.is_file()]
    if not images:
        raise InputError(f"no images in the folder {folder}",
                         fix=f"put image files ({', '.join(IMAGE_EXTENSIONS)}) there, or give another folder")
    return [BatchItem(p.absolute(), None, dict(defaults), str(folder)) for p in images]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not text
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text", fix="save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}", fix="check the file's permissions") from None


def _prompt_list(path: Path, defaults: dict[str, Any]) -> list[BatchItem]:
    items = []
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            items.append(BatchItem(None, prompt, dict(defaults), f"{path}:{lineno}"))
    if not items:
        raise InputError(f"no prompts in {path}", fix="write one prompt a line (lines starting with # are ignored)")
    return items


def _manifest(path: Path, defaults: dict[str, Any]) -> list[BatchItem]:
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    items = [_row_item(path, lineno, row, defaults) for lineno, row in rows]
    if not items:
        raise InputError(f"no rows in the manifest {path}", fix="add one row per item, with an image or a prompt")
    return items


def _check_columns(path: Path, columns: Iterable[str], where: str = "") -> None:
    allowed = [*SOURCES, *settings_spec()]
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        kind = "column" if path.suffix.lower() == ".csv" else "key"
        names = ", ".join(repr(c) for c in unknown)
        raise InputError(f"{path}{where}: unknown {kind}{'s' if len(unknown) > 1 else ''} {names}",
                         fix=f"allowed {kind}s are {', '.join(allowed)}")


def _csv_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, {column: value}) of each non-empty row; cells are text, converted by :func:`_from_text`."""
    reader = csv.reader(_read_text(path).splitlines())
    header = next(reader, None)
    if not header:
        raise InputError(f"the manifest {path} is empty", fix="its first line names the columns: image or prompt, "
                                                             "then any settings (seed, texture_size, ...)")
    header = [h.strip() for h in header]
    if "" in header:
        raise InputError(f"{path}: column {header.index('') + 1} of the header has no name",
                         fix="name every column (image or prompt, then settings), or remove the empty one")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise InputError(f"{path}: the header names {duplicates} twice", fix="keep one column per setting")
    _check_columns(path, header)
    rows = []
    for cells in reader:
        lineno = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            raise InputError(f"{path}:{lineno}: {len(cells)} cells but {len(header)} columns",
                             fix="quote cells that contain commas, or add the missing column names")
        row = {column: cell.strip() for column, cell in zip(header, cells) if cell.strip()}  # empty: the default
        rows.append((lineno, {k: _from_text(path, lineno, k, v) for k, v in row.items()}))
    return rows


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, object) of each non-blank line; values are JSON-typed (null: the command line's default)."""
    rows = []
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})",
                             fix='one object a line, e.g. {"image": "chair.png", "seed": 7}') from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}",
                             fix='one object a line, e.g. {"prompt": "a wooden chair", "seed": 7}')
        _check_columns(path, row, f":{lineno}")
        rows.append((lineno, {k: v for k, v in row.items() if v is not None}))
    return rows


def _from_text(path: Path, lineno: int, column: str, text: str) -> Any:
    """A CSV cell as the setting's type (int, bool: true/false/1/0/yes/no/on/off); sources and text stay text."""
    spec = settings_spec().get(column)
    if spec is None or spec.type in ("str", "choice"):
        return text
    if spec.type == "int":
        try:
            return int(text)
        except ValueError:
            raise InputError(f"{path}:{lineno}: {column} must be a whole number, got {text!r}",
                             fix=f"use a number between {spec.minimum} and {spec.maximum}") from None
    if spec.type == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise InputError(f"{path}:{lineno}: {column} must be true or false, got {text!r}",
                         fix=f"write true or false (or 1 / 0) in the {column} column")
    raise TypeError(f"unhandled setting type {spec.type!r} for {column}")  # a new Setting.type: handle it here


def _row_item(path: Path, lineno: int, row: dict[str, Any], defaults: dict[str, Any]) -> BatchItem:
    where = f"{path}:{lineno}"
    given = [s for s in SOURCES if row.get(s) not in (None, "")]
    if len(given) != 1:
        raise InputError(f"{where}: give exactly one of image or prompt, got {' and '.join(given) or 'neither'}",
                         fix="fill the image column (a path) or the prompt column (text) of each row, not both")
    source = row[given[0]]
    if not isinstance(source, str):
        raise InputError(f"{where}: {given[0]} must be text, got {source!r}",
                         fix='e.g. "image": "chair.png" or "prompt": "a wooden chair"')
    settings = {**defaults, **{k: v for k, v in row.items() if k not in SOURCES}}
    specs = settings_spec()
    for name, value in settings.items():
        try:
            check_setting(name, specs[name], value)
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}", fix=exc.fix) from None
    if given[0] == "prompt":
        if not source.strip():
            raise InputError(f"{where}: the prompt is empty", fix="describe the object, e.g. 'a wooden chair'")
        return BatchItem(None, source.strip(), settings, where)
    image = Path(source).expanduser()
    if not image.is_absolute():  # relative to the manifest, wherever the command runs from
        image = path.parent / image
    return BatchItem(Path(os.path.normpath(image.absolute())), None, settings, where)  # shots/../a.png -> a.png
