"""The layout's rules (docs/architecture.md), checked on the source: who may import whom, no
import circles, one namespace, a cheap ``import varbayes`` and its public API."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder -> the import name it is installed under.
PACKAGES = {"varbayes": "varbayes", "models": "varbayes.models",
            "inference": "varbayes.inference"}
GENERIC = ("vi", "mcmc", "evidence", "workflow", "data", "backends", "ppl", "io", "runlock",
           "signals", "sharding", "ranks", "launch", "shortest_curve")
FAMILIES = ("ising", "vae")
HEAVY = ("torch", "pyro", "jax", "numpyro")


def _modules() -> dict[str, Path]:
    """Import name -> file of every module of the three installed folders."""
    found = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


MODULES = _modules()


def _imports(path: Path, name: str) -> set[str]:
    """Our modules that ``path`` imports anywhere (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in MODULES}
    return out


GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations(sources: list[str], forbidden: list[str], allowed: tuple[str, ...] = ()
                ) -> list[str]:
    return sorted(f"{s} imports {t}" for s in sources for t in GRAPH[s]
                  if any(_under(t, f) for f in forbidden) and t not in allowed)


def test_models_never_import_inference():
    models = [m for m in MODULES if _under(m, "varbayes.models")]
    assert len(models) > 20
    assert _violations(models, ["varbayes.inference"]) == []


def test_generic_families_import_no_model_family_model_commands_or_cli():
    generic = [m for m in MODULES if any(_under(m, f"varbayes.inference.{g}") for g in GENERIC)]
    assert len(generic) > 15
    forbidden = ["varbayes.inference.ising", "varbayes.inference.vae",
                 "varbayes.inference.commands", "varbayes.inference.cli", "varbayes.models"]
    assert _violations(generic, forbidden, allowed=("varbayes.models.errors",)) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_model_families_import_neither_each_other_nor_the_commands(family):
    other = next(f for f in FAMILIES if f != family)
    mods = [m for m in MODULES if _under(m, f"varbayes.inference.{family}")]
    assert len(mods) > 5
    assert _violations(mods, [f"varbayes.inference.{other}", "varbayes.inference.commands",
                              "varbayes.inference.cli"]) == []


def test_only_the_cli_imports_the_commands():
    """Commands share helpers only through commands._options and commands._limits, never
    each other."""
    outside = [m for m in MODULES if not _under(m, "varbayes.inference.commands")
               and m != "varbayes.inference.cli"]
    assert _violations(outside, ["varbayes.inference.commands"]) == []
    commands = [m for m in MODULES if _under(m, "varbayes.inference.commands")]
    assert _violations(commands, ["varbayes.inference.commands"],
                       allowed=("varbayes.inference.commands._options",
                                "varbayes.inference.commands._limits")) == []
    # the benchmarks and the figure scripts are library users too
    for path in [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "docs").rglob("*.py")]:
        used = _imports(path, "scripts")
        assert not [m for m in used if _under(m, "varbayes.inference.commands")], path


def test_no_import_circles():
    """Tarjan's strongly connected components over every import, lazy ones included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
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
            if len(comp) > 1 or v in GRAPH[v]:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


def test_inference_package_inits_import_nothing():
    inits = [m for m, p in MODULES.items() if p.name == "__init__.py"
             and (_under(m, "varbayes.inference") or m == "varbayes.models")]
    assert len(inits) >= 10
    for m in inits:
        tree = ast.parse(MODULES[m].read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)], m


def _backend_comparisons(path: Path) -> list[str]:
    """``module-level function: line`` of every comparison with a backend name or a
    ``backend`` variable in ``path``."""
    def is_backend(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in ("pyro", "numpyro")
        name = getattr(node, "id", None) or getattr(node, "attr", None)
        if isinstance(node, ast.Subscript):
            name = getattr(node.slice, "value", None)
        return isinstance(name, str) and name.endswith("backend")

    hits = []
    for fn in ast.parse(path.read_text()).body:
        for node in ast.walk(fn):
            if isinstance(node, ast.Compare) and any(
                    is_backend(n) for n in [node.left, *node.comparators]):
                hits.append(f"{getattr(fn, 'name', '<module>')}:{node.lineno}")
    return hits


def test_generic_algorithms_dispatch_on_the_backend_only_at_their_entry():
    """In the generic families a backend comparison sits only in an algorithm's entry (the
    backends' differences themselves live in backends.py and ppl.py), and in the checkpoint
    header, which drops the Pyro-only jit option and refuses a checkpoint of the other
    backend."""
    entries = {"fit", "nuts", "importance_sampling", "ais", "hmc_evidence", "options_header",
               "check_compatible", "mcem"}
    hits = {}
    for m, path in MODULES.items():
        if any(_under(m, f"varbayes.inference.{g}") for g in GENERIC) and m not in (
                "varbayes.inference.backends", "varbayes.inference.ppl"):
            for h in _backend_comparisons(path):
                hits.setdefault(h.split(":")[0], []).append(f"{path.name}:{h}")
    assert set(hits) <= entries, hits
    assert all(len(v) == 1 for v in hits.values()), hits
    assert {"fit", "nuts", "importance_sampling", "ais"} <= set(hits)


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert listed == folders
    assert config["package-dir"] == {v: k for k, v in PACKAGES.items()}


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True)


def test_import_varbayes_is_cheap_and_its_api_is_lazy(tmp_path):
    code = ("import sys, varbayes\n"
            f"heavy = {HEAVY!r}\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "from varbayes import (fit, SVIOptions, nuts, importance_sampling, quadrature, ais,\n"
            "                      from_draws, gate, loo, compare)\n"
            "objs = [getattr(varbayes, n) for n in varbayes.__all__]\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "[]"], r.stdout


def test_public_names_are_the_library_objects():
    import varbayes
    from varbayes.inference.evidence.ais import ais
    from varbayes.inference.vi.svi import SVIOptions, fit
    from varbayes.inference.workflow.diagnostics import compare, loo

    assert (varbayes.fit, varbayes.SVIOptions, varbayes.ais) == (fit, SVIOptions, ais)
    assert (varbayes.loo, varbayes.compare) == (loo, compare)
    assert {"fit", "nuts", "importance_sampling", "quadrature", "ais", "from_draws", "gate",
            "loo", "compare"} <= set(varbayes.__all__) <= set(dir(varbayes))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = varbayes.nope


@pytest.mark.slow
def test_a_users_own_models_py_does_not_shadow_the_library(tmp_path):
    """No generic top-level name is importable, and a local models.py is the user's."""
    r = _run("import models", tmp_path)
    assert r.returncode != 0 and "No module named 'models'" in r.stderr
    r = _run("import inference", tmp_path)
    assert r.returncode != 0 and "No module named 'inference'" in r.stderr
    (tmp_path / "models.py").write_text("MINE = True\n")
    (tmp_path / "inference.py").write_text("MINE = True\n")
    r = _run("import varbayes.inference.cli, models, inference\n"
             "from varbayes import fit\n"
             "from varbayes.models.vae.config import VAEConfig\n"
             "print(models.MINE, inference.MINE, fit.__module__)", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "varbayes.inference.vi.svi"]


@pytest.mark.slow
def test_the_wheel_installs_only_the_varbayes_namespace(tmp_path):
    """Build the wheel from a copy of the sources: every file lies under varbayes/."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--quiet", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("varbayes-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"varbayes"}
    for path in ("varbayes/models/vae/pyro_model.py", "varbayes/inference/vi/svi.py",
                 "varbayes/inference/cli.py", "varbayes/__main__.py"):
        assert path in names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "varbayes = varbayes.inference.cli:main" in text
