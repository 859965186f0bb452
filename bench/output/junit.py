"""JUnit XML for CI systems: one test case per judged check (a threshold × row, a compared row).

The file follows the de-facto schema CI systems read (Jenkins, GitLab, GitHub Actions' test
reporters): ``<testsuites><testsuite name tests failures><testcase classname name>`` with a
``<failure message>`` child for each failed case. It is written atomically: a CI job that
reads it never sees half a file.
"""
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from bench.errors import UsageError


@dataclass(frozen=True)
class Case:
    """One judged check: ``failure`` is the one-line reason, empty when it passed."""
    classname: str
    name: str
    failure: str = ""


def check_writable(path):
    """Refuse (one line, exit 2) a ``--junit`` path whose folder does not exist, before a run."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--junit {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"--junit {path}: is a folder, give a file name")


def write(path, suite, cases):
    """Write ``cases`` as one test suite named ``suite`` to ``path`` (atomically)."""
    failures = sum(1 for c in cases if c.failure)
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(failures))
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)),
                         failures=str(failures), errors="0", skipped="0")
    for c in cases:
        case = ET.SubElement(node, "testcase", classname=c.classname, name=c.name)
        if c.failure:
            failure = ET.SubElement(case, "failure", message=c.failure, type="threshold")
            failure.text = c.failure
    tmp = f"{path}.tmp"
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
