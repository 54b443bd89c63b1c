"""The shape of the house: no import circle, layers that import only downwards, one definition of
each shared helper, and a README module table that names every module."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gtn_nas", "search_spaces")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function (lazy imports
    close circles too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            while n and n not in MODULES:
                n = n.rpartition(".")[0]
            if n:
                found.add(n)
    return found


GRAPH = {m: _imports(p) - {m} for m, p in MODULES.items()}


def _package_of(module: str) -> str:
    return module if module in ("gtn_nas", "search_spaces") else module.rpartition(".")[0] or module


def test_no_import_circle():
    """Tarjan over the module graph (package __init__s excluded as edges into themselves)."""
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w == _package_of(v) or v == _package_of(w) and w.startswith(v):
                continue  # a package and its own submodules
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    assert cycles == [], f"import circles: {cycles}"


LAYERS = {  # a module of a layer may import only from its own layer and those listed
    "gtn_nas.core": {"gtn_nas.errors"},
    "gtn_nas.meta": {"gtn_nas.core", "gtn_nas.config", "gtn_nas.errors", "gtn_nas.io", "search_spaces"},
    "gtn_nas.io": {"gtn_nas.config", "gtn_nas.errors", "gtn_nas.core"},
    "search_spaces": {"gtn_nas.core", "gtn_nas.errors"},
    "gtn_nas.search": {"gtn_nas.core", "gtn_nas.config", "gtn_nas.errors", "gtn_nas.io",
                       "gtn_nas.meta", "search_spaces"},
    "gtn_nas.retraining": {"gtn_nas.core", "gtn_nas.config", "gtn_nas.errors", "gtn_nas.search",
                           "search_spaces"},
}


def _layer(module: str) -> str:
    for layer in sorted(LAYERS, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return module


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_import_only_downwards(layer):
    allowed = LAYERS[layer] | {layer}
    bad = {m: sorted(w for w in GRAPH[m] if not any(w == a or w.startswith(a + ".") for a in allowed))
           for m in GRAPH if _layer(m) == layer}
    bad = {m: ws for m, ws in bad.items() if ws}
    assert bad == {}, f"{layer} imports upwards: {bad}"


def test_the_core_does_no_io_and_knows_no_search_space():
    for m, path in MODULES.items():
        if _layer(m) != "gtn_nas.core":
            continue
        text = path.read_text()
        assert "search_spaces" not in GRAPH[m], m
        assert not re.search(r"\bopen\(|\.read_text\(|\.write_text\(|import orbax|import sqlite3", text), m


def test_nothing_imports_the_cli_or_the_commands_but_the_cli():
    for m, deps in GRAPH.items():
        if m.startswith("gtn_nas.commands"):
            continue
        assert not {d for d in deps if d.startswith("gtn_nas.commands")}, m


@pytest.mark.parametrize("name", ["make_optimizer", "count_params", "count_flops", "accuracy",
                                  "random_crop", "normalize", "cutout", "write_atomic",
                                  "resumable_keys", "build_config"])
def test_one_definition_of_each_shared_helper(name):
    where = [m for m, p in MODULES.items()
             if re.search(rf"^def {name}\(", p.read_text(), flags=re.M)]
    assert len(where) == 1, f"{name} is defined in {where}"


def test_no_resumable_key_sets_outside_the_configs():
    for m, p in MODULES.items():
        if m != "gtn_nas.config":
            assert "RESUMABLE_KEYS =" not in p.read_text(), m


def test_readme_module_table_names_every_module():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("<!-- modules -->"):readme.index("<!-- /modules -->")]
    listed = set(re.findall(r"`((?:gtn_nas|search_spaces)(?:/\w+)*(?:\.py|/))`", table))
    files = {str(p.relative_to(ROOT)) for p in MODULES.values()}
    files = {f for f in files if not f.endswith("__init__.py") or f.count("/") == 1}
    covered = {f for f in files if f in listed or any(f.startswith(d) for d in listed if d.endswith("/"))}
    missing = sorted(files - covered - {"gtn_nas/__init__.py", "search_spaces/__init__.py"})
    assert missing == [], f"README module table misses {missing}"
    stale = sorted(x for x in listed if not (ROOT / x).exists())
    assert stale == [], f"README module table lists what does not exist: {stale}"
