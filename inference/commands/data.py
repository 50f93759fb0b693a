"""``varbayes data list | verify NAME | download NAME``."""

from __future__ import annotations

import argparse
from typing import NamedTuple

from varbayes.inference.commands._options import add_data_dir
from varbayes.inference.data import datasets
from varbayes.inference.data import files as datafiles
from varbayes.inference.data.download import download
from varbayes.models.errors import VarbayesError

#: Everything ``data list`` reports: the array datasets plus the letterA image.
NAMES = (*datasets.DATASETS, "letterA")


class Status(NamedTuple):
    """Where a dataset was found and whether it verified."""

    name: str
    where: str
    ok: bool
    detail: str


def verify(name: str, data_dir: str | None = None) -> Status:
    """Load (and so checksum) one dataset; never raises for a missing or bad file."""
    if name not in NAMES:
        raise VarbayesError(f"unknown dataset '{name}': choose one of {', '.join(NAMES)}")
    where = "scikit-learn (bundled)" if name == "digits" else str(
        datafiles.dataset_dir(name, data_dir))
    try:
        if name == "letterA":
            img = datasets.load_binary_image("letterA", data_dir)
            detail = f"{img.shape[0]}x{img.shape[1]} image, {int((img == 1).sum())} pixels on"
        else:
            d = datasets.load(name, data_dir)
            detail = f"train {len(d.x_train)}, test {len(d.x_test)}, {d.x_train.shape[1]} pixels"
    except VarbayesError as e:
        return Status(name, where, False, str(e))
    return Status(name, where, True, detail)


def _list(args: argparse.Namespace) -> int:
    root, why = datafiles.data_root(args.data_dir)
    print(f"data dir: {root} (from {why})")
    for s in (verify(n, args.data_dir) for n in NAMES):
        mark = "verified" if s.ok else "MISSING " if "not found" in s.detail else "BAD     "
        print(f"  {s.name:<16} {mark}  {s.where}\n  {'':<16}           {s.detail}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    s = verify(args.name, args.data_dir)
    if not s.ok:
        raise VarbayesError(s.detail)
    print(f"{s.name}: verified in {s.where} ({s.detail})")
    return 0


def _download(args: argparse.Namespace) -> int:
    mirrors = [args.mirror] if args.mirror else None
    paths = download(args.name, args.data_dir, mirrors=mirrors, force=args.force)
    for p in paths:
        print(f"{args.name}: {p} verified")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data list``, ``data verify NAME`` and ``data download NAME``."""
    p = sub.add_parser("data", help="list, verify and download datasets",
                       description="What data is available where, checksum verification, "
                                   "and downloads from the canonical sources.")
    s = p.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    for name, func, help_ in (("list", _list, "show each dataset, where it is, and whether it "
                                              "verified"),):
        q = s.add_parser(name, help=help_, description=help_)
        add_data_dir(q)
        q.set_defaults(func=func)
    q = s.add_parser("verify", help="checksum one dataset", description="Checksum one dataset.")
    q.add_argument("name", choices=NAMES, metavar="NAME", help=f"one of {', '.join(NAMES)}")
    add_data_dir(q)
    q.set_defaults(func=_verify)
    q = s.add_parser("download", help="fetch a dataset from its canonical source",
                     description="Fetch a dataset's files over HTTPS, verify them, then move "
                                 "them into place atomically.")
    q.add_argument("name", choices=list(datafiles.SOURCES), metavar="NAME",
                   help=f"one of {', '.join(datafiles.SOURCES)}")
    q.add_argument("--mirror", metavar="URL", help="base URL to fetch the files from instead")
    q.add_argument("--force", action="store_true", help="download even if verified files exist")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_dir(q)
    q.set_defaults(func=_download)
