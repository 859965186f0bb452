"""notebooks/causes.ipynb runs top to bottom on a fresh run recorded with --server-events on,
shows the step's GC collections from events/, and is committed without outputs."""
import os

import nbclient
import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOK = os.path.join(ROOT, "notebooks", "causes.ipynb")


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source.strip() == 'RUN_DIR = "../results/latest"'
    assert "reader.read(RUN_DIR)" in "\n".join(c.source for c in code)
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_runs_on_a_fresh_run(bench, tmp_path, monkeypatch):
    proc = bench.run("run", "--quick", "--variants", "socketio-run-threading", "--scenario",
                     "rate", "--server-events", "on", "--no-report", "--out", tmp_path,
                     timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = bench.run_dirs(str(tmp_path))
    monkeypatch.setenv("BENCH_RUN_DIR", str(run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={
        "metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    shown = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "gc gen0" in shown and "sampler" in shown
    assert "server_gc_count" in shown
    assert sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs) >= 1
