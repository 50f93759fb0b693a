"""CLI: --help everywhere, one-line errors with exit status 2, the demo end to end."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from varbayes.inference.cli import build_parser, main

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow


def _commands(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    """Every command path in the parser tree, e.g. ('data', 'verify')."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())


def test_expected_commands_are_registered():
    assert {("demo",), ("data", "list"), ("data", "verify"), ("data", "download")} <= set(
        COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "varbayes")
def test_help_on_every_command(path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    assert "usage: varbayes" in capsys.readouterr().out


def test_version(capsys):
    import varbayes

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"varbayes {varbayes.__version__}"
    ok = subprocess.run([sys.executable, "-m", "varbayes", "--version"], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == f"varbayes {varbayes.__version__}"


def test_every_command_is_in_the_cli_reference():
    text = (Path(__file__).resolve().parents[3] / "docs" / "cli.md").read_text()
    for path in COMMANDS:
        if path:
            assert f"varbayes {' '.join(path)}" in text, f"docs/cli.md lacks {path}"


def test_console_script_help_and_bad_input_one_line(tmp_path):
    exe = shutil.which("varbayes") or str(Path(sys.executable).parent / "varbayes")
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "demo" in ok.stdout
    bad = subprocess.run([exe, "data", "verify", "mnist", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found in" in lines[0] and "Traceback" not in bad.stderr


@pytest.mark.parametrize("argv, needle", [
    (["nonsense"], "invalid choice"),
    (["data", "verify", "nope"], "invalid choice: 'nope'"),
    (["data", "download", "digits"], "invalid choice: 'digits'"),
    (["demo", "--seed", "x"], "invalid int value"),
])
def test_usage_errors_are_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and needle in err[0]


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "--quick", "--quiet", "--out", str(f)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_data_list_and_verify(shared_data, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "verified" in out
    assert main(["data", "verify", "mnist"]) == 0


def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", "--quick", "--quiet", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["data_digits_n_train"] == 1437
    assert list(tmp_path.glob("*/*.png")), "the demo writes figures"
    assert "report:" in capsys.readouterr().out
