"""The card linter: is a card complete, and does everything it points at exist?

`lint_card(path)` returns one line per problem, `"<card>: <field>: <what is wrong>"`; an empty
list means the card passes. `lint_path(path)` lints a card file, a dataset folder or a whole
round (every dataset folder that holds data must have a card). Works on local paths and fsspec
URLs alike.
"""

from __future__ import annotations

import glob as globlib
import posixpath
import re

import fsspec
import pyarrow.parquet as pq
import yaml

from data_cards.datasets import CARD_FILE, PAIRS_STAGE, SCORES_FOLDER, STAGE_KINDS

REQUIRED_FIELDS = ("license", "language", "tags", "annotations_creators", "size_categories", "task_categories",
                   "configs", "dataset_info")  # fmt: skip
REQUIRED_SECTIONS = ("Motivation", "Composition", "Collection process", "Preprocessing, cleaning and labeling",
                     "Annotators", "Uses", "Distribution", "Maintenance", "Models and licences", "Known skews",
                     "Provenance")  # fmt: skip
# Cards tagged with a kind need that kind's sections too.
KIND_SECTIONS = {"scores": ("Score distributions",), "preference": ("Pair counts per rule", "Score distributions")}
PLACEHOLDERS = re.compile(r"\{\{|\}\}|\{%|%\}|\bTODO\b|\bTBD\b|\bFIXME\b")
# "None" where a value belongs: a table cell, after a colon, or a whole line (an unset Python value leaked).
NONE_VALUE = re.compile(r"\|\s*`?None`?\s*(?=\|)|:\s*`?None`?\s*$|^\s*`?None`?\s*$", re.MULTILINE)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^## +(.+?)\s*$", re.MULTILINE)


def lint_card(path: str) -> list[str]:
    fs, card = fsspec.core.url_to_fs(str(path))
    if not fs.isfile(card):
        return [f"{path}: {CARD_FILE}: missing card"]
    text = fs.cat_file(card).decode("utf-8", errors="replace")
    folder = posixpath.dirname(card)
    problems = []
    header, body = _split_header(text)
    if isinstance(header, str):  # an error message
        problems.append(("yaml header", header))
        header = {}
    problems += _check_fields(header)
    problems += _check_sections(body, header)
    problems += [(f"line {n}", f"unrendered placeholder {m!r}") for n, m in _matches(PLACEHOLDERS, text)]
    problems += [(f"line {n}", "'None' where a value is expected") for n, _ in _matches(NONE_VALUE, text)]
    problems += [(f"plot {ref}", "referenced but not found beside the card")
                 for ref in IMAGE.findall(body) if "://" not in ref and not fs.exists(posixpath.join(folder, ref))]  # fmt: skip
    problems += _check_data_files(fs, folder, header)
    return [f"{path}: {field}: {what}" for field, what in problems]


def lint_path(path: str) -> list[str]:
    """Lint a card file, a dataset folder (its README.md) or a round (every dataset folder with data)."""
    fs, target = fsspec.core.url_to_fs(str(path))
    if not fs.exists(target):
        return [f"{path}: path: no such file or folder"]
    if fs.isfile(target):
        return lint_card(path)
    prefix = str(path).rstrip("/")
    if not fs.exists(posixpath.join(target, "manifest.json")):
        return lint_card(f"{prefix}/{CARD_FILE}")
    folders = [f for f in _dataset_folders(fs, target) if fs.glob(posixpath.join(target, f, "**", "*.parquet"))]
    if not folders:
        return [f"{path}: datasets: the round has no dataset folders with data yet"]
    return [problem for folder in folders for problem in lint_card(f"{prefix}/{folder}/{CARD_FILE}")]


def _dataset_folders(fs, root: str) -> list[str]:
    folders = list(STAGE_KINDS)
    for parent in (SCORES_FOLDER, PAIRS_STAGE):  # one dataset per score kind and per strategy
        path = posixpath.join(root, parent)
        if fs.isdir(path):
            folders += sorted(f"{parent}/{posixpath.basename(p)}" for p in fs.ls(path, detail=False) if fs.isdir(p))
    return folders


def _split_header(text: str) -> tuple[dict | str, str]:
    if not text.startswith("---\n"):
        return "the card must start with a '---' YAML block", text
    end = text.find("\n---\n", 4)
    if end < 0:
        return "the YAML block is not closed by a '---' line", text
    try:
        header = yaml.safe_load(text[4:end])
    except yaml.YAMLError as exc:
        return f"not valid YAML: {' '.join(str(exc).split())}", text[end + 5 :]
    if not isinstance(header, dict):
        return f"must be a mapping, got {type(header).__name__}", text[end + 5 :]
    return header, text[end + 5 :]


def _check_fields(header: dict) -> list[tuple[str, str]]:
    problems = []
    for field in REQUIRED_FIELDS:
        if field not in header:
            problems.append((field, "missing"))
        elif _empty(header[field]):
            problems.append((field, "empty"))
        else:
            problems += [(f"{field}{where}", "empty") for where in _empty_leaves(header[field])]
    info = header.get("dataset_info")
    if isinstance(info, dict):
        problems += [(f"dataset_info.{key}", "missing") for key in ("features", "splits") if key not in info]
    return problems


def _check_sections(body: str, header: dict) -> list[tuple[str, str]]:
    found = {}
    matches = list(HEADING.finditer(body))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        content = [line for line in body[match.end() : end].splitlines() if line.strip() and not line.startswith("#")]
        found[match.group(1)] = bool(content)
    tags = header.get("tags") or [] if isinstance(header, dict) else []
    wanted = list(REQUIRED_SECTIONS) + [s for tag, extra in KIND_SECTIONS.items() if tag in tags for s in extra]
    problems = []
    for section in wanted:
        if section not in found:
            problems.append((f"section '{section}'", "missing"))
        elif not found[section]:
            problems.append((f"section '{section}'", "empty"))
    return problems


def _check_data_files(fs, folder: str, header: dict) -> list[tuple[str, str]]:
    """Every configs[].data_files path exists; split sizes match dataset_info.splits."""
    problems, rows = [], {}
    for config in header.get("configs") or []:
        entries = config.get("data_files") if isinstance(config, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            paths = entry.get("path") if isinstance(entry, dict) else entry
            for ref in [paths] if isinstance(paths, str) else paths or []:
                found = fs.glob(posixpath.join(folder, ref)) if globlib.has_magic(ref) else [posixpath.join(folder, ref)]
                if not found or not all(fs.exists(f) for f in found):
                    problems.append((f"data_files {ref}", "referenced but not found"))
                    continue
                split = entry.get("split", "train") if isinstance(entry, dict) else "train"
                rows[split] = rows.get(split, 0) + sum(_num_rows(fs, f) for f in found)
    info = header.get("dataset_info")
    for split in (info.get("splits") or []) if isinstance(info, dict) else []:
        name = split.get("name") if isinstance(split, dict) else None
        if name in rows and split.get("num_examples") != rows[name]:
            problems.append((f"dataset_info.splits.{name}.num_examples", f"{split.get('num_examples')} but the data files hold {rows[name]} rows"))
    return problems


def _num_rows(fs, path: str) -> int:
    with fs.open(path, "rb") as handle:
        return pq.read_metadata(handle).num_rows


def _empty(value) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and not (value.strip() if isinstance(value, str) else value))


def _empty_leaves(value, where: str = "") -> list[str]:
    """Dotted locations of None or blank values nested inside a field."""
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in (_empty_leaves(v, f"{where}.{k}") if not _empty(v) else [f"{where}.{k}"])]
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in (_empty_leaves(v, f"{where}[{i}]") if not _empty(v) else [f"{where}[{i}]"])]
    return []


def _matches(pattern: re.Pattern, text: str) -> list[tuple[int, str]]:
    return [(text.count("\n", 0, m.start()) + 1, m.group(0).strip()) for m in pattern.finditer(text)]
