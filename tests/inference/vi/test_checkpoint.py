"""The checkpoint file: atomic, pickle-free, and refused clearly when it is not ours."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from varbayes.inference.vi.checkpoint import load_checkpoint, save_checkpoint
from varbayes.models.errors import VarbayesError


def test_checkpoint_never_unpickles(tmp_path):
    """An npz holding a pickled object array is refused, not executed."""
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(b'{"format": "varbayes-svi-1"}', np.uint8),
             **{"a/evil": np.array([object()], dtype=object)})
    (tmp_path / "evil.npz").write_bytes(buf.getvalue())
    with pytest.raises(VarbayesError, match="corrupt"):
        load_checkpoint(tmp_path / "evil.npz")
    # a file that is a zip but not ours
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("x.txt", "hello")
    with pytest.raises(VarbayesError, match=r"corrupt|not a varbayes"):
        load_checkpoint(tmp_path / "other.npz")
    p = save_checkpoint(tmp_path / "ok.npz", {"w": np.ones(3)}, {"format": "varbayes-svi-1"})
    arrays, header = load_checkpoint(p)
    assert header["format"] == "varbayes-svi-1" and arrays["w"].tolist() == [1, 1, 1]
