"""The house rules, checked on the source: imports point one way, no module imports itself back
through another, a lower layer never names a higher one (not even as a string), and the CLI's
help loads none of the heavy libraries."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "reward_model", "alignment", "data_cards", "flows", "songpref")
# A module may import from its own package and the packages listed for it.
ALLOWED = {
    "pipeline": set(),
    "reward_model": {"pipeline"},
    "data_cards": {"pipeline"},
    "alignment": {"pipeline"},
    "flows": {"pipeline", "reward_model", "alignment", "data_cards"},
    "songpref": {"pipeline", "reward_model", "alignment", "data_cards", "flows"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES}


def test_layers_below_flows_import_no_prefect():
    """Prefect lives in flows/ and the CLI; the domain layers run without it (DESIGN.md)."""
    found = []
    for name, path in modules().items():
        if name.split(".")[0] in ("pipeline", "reward_model", "alignment", "data_cards"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])  # fmt: skip
                found += [f"{name} imports {n}" for n in names if n.split(".")[0] == "prefect"]
    assert not found, "\n".join(found)


def test_imports_point_one_way_and_lower_layers_never_name_higher_ones():
    problems = []
    for name, path in modules().items():
        own = name.split(".")[0]
        for target in imports(path, top_level_only=False):
            if target.split(".")[0] not in ALLOWED[own] | {own}:
                problems.append(f"{name} imports {target}")
        text = path.read_text(encoding="utf-8")
        for higher in set(PACKAGES) - ALLOWED[own] - {own}:
            # "songpref.models" and the like are entry-point groups (the product's name); its CLI is songpref.cli*
            prefix = "songpref.cli" if higher == "songpref" else f"{higher}."
            if f'"{prefix}' in text or f"'{prefix}" in text:
                problems.append(f"{name} names {prefix}* in a string")
    assert not problems, "\n".join(problems)


def test_no_import_circles_between_modules():
    known = modules()
    graph = {name: {t for t in imports(path, top_level_only=True) if t in known} - {name} for name, path in known.items()}
    state, circles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open" and not node.startswith(target + "."):  # a package's own __init__ is no circle
                circles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, "\n".join(circles)


def test_cli_help_imports_no_heavy_library():
    loaded = subprocess.run([sys.executable, "-c", "import sys, songpref.cli; print(' '.join(sorted(sys.modules)))"],
                            capture_output=True, text=True, cwd=REPO, check=True).stdout.split()  # fmt: skip
    heavy = {"torch", "pandas", "prefect", "transformers", "trl", "scipy", "pyarrow"} & set(loaded)
    assert not heavy, f"songpref --help would import {sorted(heavy)}"
