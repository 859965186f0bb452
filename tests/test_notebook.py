"""notebooks/analysis.ipynb runs top to bottom on a fresh run and on the committed reference run,
reads through bench.analysis.reader, shows censored percentiles, the driver's share, knees with
their bounds and noisy steps, redraws every chart the report draws, and is committed without
outputs."""
import os

import nbclient
import nbformat
import pytest

from bench.output import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "analysis.ipynb")
REFERENCE = os.path.join(ROOT, "results", "reference")


def execute(monkeypatch, run_dir=None):
    """The executed notebook; BENCH_RUN_DIR points it at ``run_dir`` (else its default)."""
    if run_dir:
        monkeypatch.setenv("BENCH_RUN_DIR", str(run_dir))
    else:
        monkeypatch.delenv("BENCH_RUN_DIR", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={
        "metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    return nb


def text(nb):
    """Everything the executed notebook printed or displayed as text/HTML."""
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            out.append(o.get("text", ""))
            out += [str(o.get("data", {}).get(k, "")) for k in ("text/plain", "text/html")]
    return "\n".join(out)


def images(nb):
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    source = "\n".join(c.source for c in code)
    assert "reader.read(RUN_DIR)" in source and "read_csv" not in source
    assert code[0].source.strip() == 'RUN_DIR = "../results/reference"'
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_runs_on_a_fresh_run(bench, tmp_path, monkeypatch):
    proc = bench.run("run", "--quick", "--variants", "socketio-run-gevent", "--scenario", "echo",
                     "--no-report", "--out", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = bench.run_dirs(str(tmp_path))
    report.build(run)
    nb = execute(monkeypatch, run)
    assert images(nb) == len(os.listdir(os.path.join(run, "plots")))


@pytest.mark.skipif(not os.path.isdir(REFERENCE),
                    reason="results/reference/ is not committed yet (the notebook's default run)")
def test_runs_on_the_reference_run(monkeypatch):
    nb = execute(monkeypatch)
    assert images(nb) > 0
    shown = text(nb)
    for what in ("rows with a censored percentile: 0", "driver_share", "noisy steps: 0 of",
                 "no sweep in this run", "ci_method", "log-t"):
        assert what in shown, what
