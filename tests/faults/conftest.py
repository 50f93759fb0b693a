"""The fault tests' record: with ``VARBAYES_FAULTS_REPORT=FILE`` (``make faults`` sets it)
every fault test that passes appends one JSON line, what was tried and how often, from
which docs/reliability.md's table is filled."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture
def fault_log(request):
    """``fault_log(fault, tries, survived, lost)``: one line in the report (if any)."""

    def log(fault: str, tries: int, survived: int, lost: str) -> None:
        path = os.environ.get("VARBAYES_FAULTS_REPORT")
        if not path:
            return
        line = json.dumps({"test": request.node.nodeid, "fault": fault, "tries": tries,
                           "survived": survived, "lost": lost})
        with open(path, "a") as f:
            f.write(line + "\n")

    return log
