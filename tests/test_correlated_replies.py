"""Replies matched by id (``"{seq}"``) on an app nobody here wrote: Flask-SocketIO's own example
app (``example/app.py`` of the Flask-SocketIO repository, unmodified), under threading, gevent
and eventlet. It is not redistributed here (it reaches no package registry this project
installs from): point ``BENCH_UPSTREAM_EXAMPLE`` at a copy to run that test. Its
``my_response`` event answers ``my_event`` but is also emitted unprompted (on connect, on join,
every 10 s); by id the replies are matched exactly and the unprompted ones counted; in order the
row says its matching is ambiguous and is invalid."""
import os

import pytest

from tests.test_bad_input import assert_one_line_usage_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM = os.path.join(ROOT, "tests", "upstream")
EXAMPLE = os.environ.get("BENCH_UPSTREAM_EXAMPLE", "")
VARIANTS = ["socketio-run-threading", "socketio-run-gevent", "socketio-run-eventlet"]
CONNECTIONS = 3


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(EXAMPLE), reason="BENCH_UPSTREAM_EXAMPLE does not name "
                    "a copy of Flask-SocketIO's example/app.py (not redistributed here)")
@pytest.mark.parametrize("name", ["my_event", "my_event_fifo"])
def test_upstream_example_app_under_three_async_modes(bench, tmp_path, name):
    r = bench.run("run", "--app", EXAMPLE + ":app", "--scenario-file",
                  os.path.join(UPSTREAM, f"{name}.toml"), "--variants", ",".join(VARIANTS),
                  "--scenario", "rate", "--rate", "100", "--connections", CONNECTIONS,
                  "--quick", "--duration", "1.5", "--warmup", "0.5", "--deadline-ms", "2000",
                  "--no-report", "--out", tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, = bench.run_dirs(str(tmp_path))
    rows = bench.summary(run_dir)
    measured = rows[rows["repeat"] != "all"]
    assert sorted(measured["variant"]) == sorted(VARIANTS)
    for _, row in measured.iterrows():
        what = (row["variant"], row["note"])
        assert row["transport"] == "websocket", what
        assert row["ok"] > 0 and row["ok"] == row["attempted"], what
        # the greeting on connect and the answer to join, per connection, at least
        assert row["unsolicited"] >= 2 * CONNECTIONS, what
        if name == "my_event":
            assert row["reply_match"] == "seq" and bool(row["valid"]), what
        else:
            assert row["reply_match"] == "fifo" and not row["valid"], what
            assert "ambiguous" in row["note"] and "{seq}" in row["note"], what
    aggregate = rows[rows["repeat"] == "all"]
    assert (aggregate["unsolicited"] >= 2 * CONNECTIONS).all()
    assert set(aggregate["reply_match"]) == {"seq" if name == "my_event" else "fifo"}


def test_seq_in_a_setup_event_is_refused_in_one_line(bench, tmp_path):
    toml = tmp_path / "setup_seq.toml"
    toml.write_text('[[setup]]\nevent = "join"\nargs = [{ room = "{seq}" }]\n'
                    '[[messages]]\nevent = "echo"\nargs = [1]\n')
    r = bench.run("run", "--scenario-file", toml, "--variants", "socketio-run-threading",
                  "--out", tmp_path / "out", timeout=60)
    assert_one_line_usage_error(r, "line 3: setup[1].args", None)
    assert "{seq}" in r.stderr and not os.path.exists(tmp_path / "out" / "summary.csv")


def test_traffic_without_auth_key_has_no_auth_payload():
    from bench.driver import protocol
    from bench.plan import traffic

    plain = traffic.validate({"messages": [{"event": "echo"}]})
    assert plain["auth"] is None
    assert protocol.connect_packet(plain["namespace"], plain["auth"]) == "40"
    given = traffic.validate({"connect": {"auth": {"token": "t"}},
                              "messages": [{"event": "echo"}]})
    assert protocol.connect_packet("/", given["auth"]) == '40{"token":"t"}'


def test_pushed_cell_and_replies_merge_over_processes():
    from bench.analysis.aggregate import _pushed_sum
    from bench.analysis.recorder import pushed_text
    from bench.driver.custom import merge_replies

    merged = merge_replies([
        dict(reply_match="fifo", unsolicited={"r": 2}, pushed={"b": 1, "a": 3}, ambiguous=2),
        None,
        dict(reply_match="fifo", unsolicited={"r": 1, "s": 4}, pushed={"a": 1}, ambiguous=1)])
    assert merged == dict(reply_match="fifo", unsolicited={"r": 3, "s": 4},
                          pushed={"a": 4, "b": 1}, ambiguous=3)
    assert pushed_text(merged["pushed"]) == "a=4;b=1"
    assert _pushed_sum([{"pushed": "a=4;b=1"}, {"pushed": ""}, {"pushed": "b=2;c=1"}]) == \
        "a=4;b=3;c=1"
    assert merge_replies([None]) is None
