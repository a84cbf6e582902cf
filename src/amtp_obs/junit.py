"""Results as a JUnit XML test suite, the report format CI systems read."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from amtp_obs.steps import FAIL, SKIP, Result


def write_junit(results: Sequence[Result], path: Path, *, suite: str, classname: str) -> None:
    """One ``testsuite`` with a ``testcase`` per result: failures and skips carry their detail."""
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(sum(r.status == FAIL for r in results)),
        skipped=str(sum(r.status == SKIP for r in results)),
        time=f"{sum(r.duration for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(root, "testcase", classname=classname, name=r.name, time=f"{r.duration:.3f}")
        if r.status == FAIL:
            ET.SubElement(case, "failure", message=r.detail).text = r.detail
        elif r.status == SKIP:
            ET.SubElement(case, "skipped", message=r.detail)
        else:
            ET.SubElement(case, "system-out").text = r.detail
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
