"""mkdocs hook: the one ``varbayes`` package tree that the API reference reads.

The folders ``models/`` and ``inference/`` are installed as ``varbayes.models`` and
``varbayes.inference`` (setuptools ``package-dir``), a mapping that mkdocstrings' loader
(griffe) does not follow. Before the build this hook lays ``build/api-src/varbayes/``: a copy
of ``varbayes/__init__.py`` (a link would lead griffe back to ``varbayes/``) and links to
``models/`` and ``inference/``; mkdocs.yml points mkdocstrings there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def lay_tree(root: Path = ROOT) -> Path:
    """Lay ``build/api-src/varbayes/`` under ``root`` and return it."""
    tree = root / "build" / "api-src" / "varbayes"
    tree.mkdir(parents=True, exist_ok=True)
    init = tree / "__init__.py"
    if init.is_symlink():
        init.unlink()
    init.write_text((root / "varbayes" / "__init__.py").read_text())
    links = {"models": root / "models", "inference": root / "inference"}
    for name, target in links.items():
        link = tree / name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return tree


def on_startup(command: str, dirty: bool) -> None:
    """Runs before any plugin reads its configuration (mkdocstrings resolves its paths in
    its own ``on_config``), so the tree exists when it is looked for."""
    lay_tree()


def on_config(config: Any) -> Any:
    lay_tree(Path(config.config_file_path).resolve().parent)
    return config
