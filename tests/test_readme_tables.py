"""make findings: the README's generated sections are what their committed runs give.

The committed README must already agree with its runs (``--check``); a section edited by
hand is rewritten back from the run; a section with no run or no renderer is one line and
exit 2, and the README is left as it was."""
import os
import shutil
import subprocess
import sys

from bench.output import readme_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check(*args):
    return subprocess.run([sys.executable, "-m", "bench.output.readme_tables", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_committed_readme_agrees_with_its_runs():
    text = open(readme_tables.README, encoding="utf-8").read()
    assert readme_tables.MARK.search(text), "no generated section in the README"
    r = check("--check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_hand_edited_figure_is_rewritten_from_the_run(tmp_path):
    copy = tmp_path / "README.md"
    shutil.copyfile(readme_tables.README, copy)
    text = copy.read_text(encoding="utf-8")
    match = readme_tables.MARK.search(text)
    edited = text[:match.start("body")] + "| a figure typed by hand |\n" + text[match.end("body"):]
    copy.write_text(edited, encoding="utf-8")
    r = check("--check", str(copy))
    assert r.returncode == 1 and "differs from its run" in r.stdout
    assert copy.read_text(encoding="utf-8") == edited  # --check changes nothing
    assert check(str(copy)).returncode == 0
    assert copy.read_text(encoding="utf-8") == text


def test_a_section_without_a_run_is_one_line(tmp_path):
    copy = tmp_path / "README.md"
    body = "<!-- generated: nowhere (make findings) -->\nold\n<!-- end generated: nowhere -->\n"
    copy.write_text(body, encoding="utf-8")
    r = check(str(copy))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nowhere" in r.stderr
    assert "Traceback" not in r.stderr and copy.read_text(encoding="utf-8") == body
