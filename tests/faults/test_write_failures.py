"""Write failures are one line naming the path and the cause, and leave no partial file."""

from __future__ import annotations

import errno

import pytest

from varbayes.inference import io, runlock
from varbayes.inference.cli import main
from varbayes.models.errors import VarbayesError


def test_an_unwritable_out_is_refused_before_any_work(capsys):
    assert main(["ising", "denoise", "--image", "shapes", "--out", "/proc/self"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out /proc/self is not writable" in err[0], err


def test_out_dir_leaves_no_probe_behind(tmp_path):
    assert io.out_dir(tmp_path / "o") == tmp_path / "o"
    assert list((tmp_path / "o").iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(VarbayesError, match="exists and is not a directory"):
        io.out_dir(tmp_path / "f")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EROFS])
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(code, tmp_path, monkeypatch,
                                                            capsys):
    """The first output written fails as a full disk would: one line with the file's path
    and the cause, exit 1, and neither the file nor a temporary file is left."""
    io.set_quiet(True)

    def full(fd):
        raise OSError(code, __import__("os").strerror(code))

    monkeypatch.setattr(io.os, "fsync", full)
    out = tmp_path / "out"
    assert main(["ising", "denoise", "--image", "shapes", "--iters", "3", "--out",
                 str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and errno.errorcode[code] in err[0] and str(out) in err[0], err
    assert "Traceback" not in "\n".join(err)
    left = [p.name for p in out.iterdir() if p.name != runlock.LOCK_NAME]
    assert left == [], "a partial or temporary file was left"


def test_atomic_write_names_the_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(OSError) as e:
        io.atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "a.json")
    assert list(tmp_path.iterdir()) == []


def test_an_output_name_taken_by_a_folder_is_one_line(tmp_path, capsys):
    """EISDIR: ``metrics.json`` exists as a folder; ENOTDIR: ``--out`` runs through a file."""
    io.set_quiet(True)
    out = tmp_path / "out"
    (out / "metrics.json").mkdir(parents=True)
    argv = ["ising", "denoise", "--image", "shapes", "--iters", "2", "--out"]
    assert main([*argv, str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(EISDIR)" in err[0] and str(out / "metrics.json") in err[0], err
    assert [p.name for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")
            ] == []
    (tmp_path / "file").write_text("x")
    assert main([*argv, str(tmp_path / "file" / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Not a directory" in err[0] and "file/sub" in err[0], err
