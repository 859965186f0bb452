"""CI gates: ``--fail-if`` and ``--junit`` judged on real runs against a server whose latency
is known (the reference server burning 2 ms of CPU per echo), through the real CLI."""
import os
import sys
import xml.etree.ElementTree as ET

import pytest

from bench import processes

SERVICE_US = 2000  # every echo costs the server 2 ms: p50 is a little above 2 ms, never below


@pytest.fixture(scope="module")
def slow_echo(tmp_path_factory):
    log = str(tmp_path_factory.mktemp("ref") / "ref.log")
    argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port),  # noqa: E731
                         str(SERVICE_US)]
    with processes.serving(argv, log, ready_timeout=30) as server:
        yield f"http://{server.host}:{server.port}"


def gate_run(bench, url, out, *gates, repeats=1):
    return bench.run("run", "--target", url, "--scenario", "echo", "--warmup", 0.2,
                     "--duration", 0.6, "--repeats", repeats, "--out", out, "--no-report",
                     *gates)


def cases(path):
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    return suite, {(c.get("name"), c.find("failure") is not None) for c in suite.iter("testcase")}


def test_a_broken_threshold_exits_1_and_a_held_one_0(bench, slow_echo, tmp_path):
    junit = tmp_path / "gates.xml"
    out = tmp_path / "runs"
    proc = gate_run(bench, slow_echo, out, "--fail-if", "p50<1ms", "--fail-if", "p50<=50ms",
                    "--fail-if", "ok>=99%", "--junit", junit)
    assert proc.returncode == 1, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("fail-if p50<1ms")]
    assert len(failed) == 1 and "bound < 1 ms" in failed[0], proc.stderr
    assert not any(line.startswith("fail-if p50<=50ms") for line in proc.stderr.splitlines())
    suite, judged = cases(junit)
    assert judged == {("p50<1ms", True), ("p50<=50ms", False), ("ok>=99%", False)}
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")

    proc = gate_run(bench, slow_echo, out, "--fail-if", "target:echo:p50<=50ms",
                    "--fail-if", "*:echo:ok>=99%")
    assert proc.returncode == 0, proc.stderr
    assert "fail-if: 2 of 2 held" in proc.stderr
    assert len(bench.run_dirs(out)) == 2  # the second run never overwrote the first


def test_an_empty_percentile_or_an_unmatched_scope_fails_never_passes(bench, slow_echo,
                                                                       tmp_path):
    proc = gate_run(bench, slow_echo, tmp_path, "--fail-if", "p9999<10s",
                    "--fail-if", "no-such-variant:echo:p50<10s")
    assert proc.returncode == 1, proc.stderr
    assert "p9999 is empty: too few samples" in proc.stderr
    assert "no row matched" in proc.stderr


@pytest.mark.parametrize("args, says", [
    (["--fail-if", "p99<50"], "give its unit"),
    (["--fail-if", "p99<50%"], "give its unit"),
    (["--fail-if", "ok>=99ms"], "give it in %"),
    (["--fail-if", "latency<5ms"], "unknown metric 'latency'"),
    (["--fail-if", "a:b:c:p99<5ms"], "VARIANT:SCENARIO"),
    (["--fail-if", "p99 = 5ms"], "cannot read"),
    (["--junit", "/no/such/folder/gates.xml"], "does not exist"),
])
def test_bad_gates_are_one_line_and_exit_2_before_anything_starts(bench, tmp_path, args, says):
    proc = bench.run("run", "--variants", "socketio-run-gevent", "--out", tmp_path, *args)
    assert proc.returncode == 2
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.listdir(tmp_path)  # refused before a results folder existed


def test_compare_writes_junit_with_the_regressed_row_failed(bench, slow_echo, tmp_path):
    fast_log = str(tmp_path / "fast.log")
    argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port)]  # noqa: E731
    with processes.serving(argv, fast_log, ready_timeout=30) as fast:
        base = gate_run(bench, f"http://{fast.host}:{fast.port}", tmp_path / "base", repeats=3)
    assert base.returncode == 0, base.stderr
    new = gate_run(bench, slow_echo, tmp_path / "new", repeats=3)  # intervals need repeats
    assert new.returncode == 0, new.stderr
    (base_dir,), (new_dir,) = bench.run_dirs(tmp_path / "base"), bench.run_dirs(tmp_path / "new")
    junit = tmp_path / "compare.xml"
    proc = bench.run("compare", base_dir, new_dir, "--force", "--junit", junit)
    assert proc.returncode == 1, proc.stderr      # 2 ms of service more per echo: a regression
    suite, judged = cases(junit)
    assert suite.get("failures") == "1" and len(judged) == 1
    failure = ET.parse(junit).getroot().find(".//failure").get("message")
    assert failure.startswith("REGRESSION")
    bad = bench.run("compare", base_dir, new_dir, "--junit", tmp_path / "no" / "c.xml")
    assert bad.returncode == 2 and "does not exist" in bad.stderr
