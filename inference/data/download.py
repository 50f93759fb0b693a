"""Download a dataset's canonical files with pooch, verified before they are moved into place.

pooch (retries, timeouts, its own atomic write) fetches each file into a private temporary
folder next to the destination, checking the published MD5 where there is one. The file is
then checked again here (MD5, or the content hash of the parsed arrays, so that a re-packed
but identical file passes) and only then renamed into place with ``os.replace``. Any failure
removes the temporary folder, so an interrupted transfer never leaves a partial file behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from varbayes.inference.data import files as df
from varbayes.inference.io import umask, verbose
from varbayes.models.errors import VarbayesError

#: Extra tries pooch makes after a failed transfer of one URL.
RETRIES = 2

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
    import pooch

    base, _, fname = url.rpartition("/")
    known = f"md5:{remote.md5}" if remote.md5 is not None else None
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        pooch.get_logger().setLevel("INFO" if verbose() else "WARNING")
        fetcher = pooch.create(path=tmp, base_url=base + "/", registry={fname: known},
                               retry_if_failed=RETRIES)
        downloader = pooch.HTTPDownloader(timeout=timeout, progressbar=verbose())
        try:
            got = Path(fetcher.fetch(fname, downloader=downloader))
        except Exception as e:  # requests' errors, pooch's hash ValueError, OSError
            raise VarbayesError(f"{url}: {_reason(e)}") from None
        verify_file(name, remote, got)
        try:
            os.chmod(got, 0o666 & ~umask())
        except OSError:
            pass
        os.replace(got, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _reason(e: Exception) -> str:
    """One line for a failed transfer; a cut-off body says how far it got."""
    text = " ".join(str(e).split())
    cut = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", text)
    if cut:
        got, more = int(cut.group(1)), int(cut.group(2))
        return f"transfer interrupted after {got} of {got + more} bytes"
    return text or type(e).__name__
