"""Download a dataset's canonical files, verified before they are moved into place.

Each file streams into a temporary file next to its destination. Only after the byte count
matches the server's Content-Length and the checksum (published MD5, or the content hash of
the parsed arrays) matches is it renamed into place with ``os.replace``. Any failure removes
the temporary file, so an interrupted transfer never leaves a partial file behind.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from varbayes.inference.data import files as df
from varbayes.inference.io import progress, temp_file
from varbayes.models.errors import VarbayesError

CHUNK = 1 << 16


def download(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 60.0,
    force: bool = False,
) -> list[Path]:
    """Fetch every file of dataset ``name`` into ``<data root>/<name>/``.

    Parameters
    ----------
    name : a key of :data:`varbayes.inference.data.files.SOURCES`.
    mirrors : base URLs to use instead of the canonical ones; a file's URL is
        ``base.rstrip('/') + '/' + file_name``.
    timeout : seconds to wait on a stalled connection.
    force : download again even when a verified file is already there.

    Returns
    -------
    The paths of the verified files.
    """
    if name not in df.SOURCES:
        raise VarbayesError(f"no download source for '{name}': choose one of "
                            f"{', '.join(df.SOURCES)} (digits is bundled and needs none)")
    folder = df.dataset_dir(name, data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VarbayesError(f"cannot create {folder}: {e.strerror}") from None
    paths = []
    for remote in df.SOURCES[name].files:
        dest = folder / remote.name
        if dest.is_file() and not force:
            try:
                verify_file(name, remote, dest)
                paths.append(dest)
                continue
            except VarbayesError:
                pass  # a bad copy is replaced below
        urls = ([m.rstrip("/") + "/" + remote.name for m in mirrors] if mirrors
                else list(remote.urls))
        errors = []
        for url in urls:
            try:
                _fetch_verified(name, remote, url, dest, timeout)
                break
            except VarbayesError as e:
                errors.append(str(e))
        else:
            raise VarbayesError(f"{name}: could not download {remote.name}: {'; '.join(errors)}")
        paths.append(dest)
    return paths


def verify_file(name: str, remote: df.RemoteFile, path: Path) -> None:
    """Check one original-format file: published MD5, else the parsed arrays' content hash."""
    if remote.md5 is not None:
        df.check_md5(name, path, remote.md5)
        return
    for key, arr in df.CONTENT_PARSERS[remote.name](path).items():
        df.check_content(name, key, arr, path)


def _fetch_verified(name: str, remote: df.RemoteFile, url: str, dest: Path,
                    timeout: float) -> None:
    fd, tmp_name = temp_file(dest, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    expected = resp.headers.get("Content-Length")
                    total = int(expected) if expected else None
                    got = 0
                    chunks = iter(lambda: resp.read(CHUNK), b"")
                    for chunk in progress(chunks, desc=remote.name,
                                          total=-(-total // CHUNK) if total else None):
                        out.write(chunk)
                        got += len(chunk)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                raise VarbayesError(f"{url}: {reason}") from None
            if total is not None and got != total:
                raise VarbayesError(f"{url}: transfer interrupted after {got} of {total} bytes")
        verify_file(name, remote, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
