"""bench.analysis.reader on the committed reference run and on broken folders: typed frames,
repeats as ints with is_aggregate, empty cells as NaN, missing columns as absent features,
intervals recomputed with stats for an old schema, one-line UsageError for a non-results folder."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from bench.analysis import reader, stats
from bench.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "results", "reference")


@pytest.fixture(scope="module")
def ref():
    return reader.read(REFERENCE)


NEWER_COLUMNS = ["driver_share", "censored", "noisy", "ci_method", "sent_rate", "deadline_ms",
                 "send_lag_p50_us", "send_lag_p99_us", "recv_wait_p50_us", "recv_wait_p99_us",
                 "steal_pct", "load_avg", "foreign_cpu_pct", "arrivals", "requested",
                 "repeats_failed", "p99_cv", "server_nodelay", "profiled"]


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    """The reference run as an older schema wrote it: the newer columns absent."""
    folder = tmp_path_factory.mktemp("old-schema")
    summary = pd.read_csv(os.path.join(REFERENCE, "summary.csv"), dtype=str)
    summary.drop(columns=[c for c in NEWER_COLUMNS if c in summary]).to_csv(
        folder / "summary.csv", index=False)
    shutil.copy(os.path.join(REFERENCE, "meta.json"), folder / "meta.json")
    return reader.read(str(folder))


def test_summary_is_split_and_typed(ref):
    raw = pd.read_csv(os.path.join(REFERENCE, "summary.csv"), dtype=str)
    assert len(ref.aggregates) == (raw["repeat"] == "all").sum() > 0
    assert len(ref.repeats) == (raw["repeat"] != "all").sum() > 0
    assert ref.aggregates["is_aggregate"].all() and not ref.repeats["is_aggregate"].any()
    assert ref.repeats["repeat"].dtype == np.int64
    assert set(ref.repeats["repeat"]) == {1, 2, 3}
    for col in ("valid", "driver_bound", "unstable", "noisy"):
        assert ref.aggregates[col].dtype == bool
    for col in ("attempted", "ok", "timeouts"):
        assert ref.repeats[col].dtype == np.int64
    for col in ("p50_us", "p99_us", "achieved_rate", "driver_share"):
        assert ref.repeats[col].dtype == float
    failed = ref.aggregates[ref.aggregates["variant"] == "seed-app-run"]
    assert failed["p50_us"].isna().all() and (failed["transport"] == "").all()


def test_absent_columns_are_absent_features(old):
    """An older run lacks these columns: they exist, empty, so code never branches."""
    agg = old.aggregates
    assert agg["driver_share"].isna().all() and (agg["censored"] == "").all()
    assert not agg["noisy"].any()
    assert old.knees.empty and old.capacity.empty and old.hlogs == [] and old.profiles == []


def test_old_schema_gets_intervals_from_stats(old):
    row = old.aggregates[(old.aggregates["variant"] == "socketio-run-gevent")
                         & (old.aggregates["scenario"] == "rate")].iloc[0]
    reps = old.repeats[(old.repeats["variant"] == "socketio-run-gevent")
                       & (old.repeats["scenario"] == "rate")]
    low, high, method = stats.interval(reps["p99_us"].tolist())
    assert (row["p99_ci_low"], row["p99_ci_high"], row["ci_method"]) == (low, high, method)
    assert method.startswith("log-t")


def test_load_points_are_numbers_and_series_names(ref):
    rate = ref.aggregates[ref.aggregates["scenario"] == "rate"]
    assert (rate["load_value"] == rate["target_rate"]).all()
    echo = ref.aggregates[ref.aggregates["scenario"] == "echo"]
    assert (echo["load_value"] == 1).all()          # one connection, closed loop
    assert (ref.aggregates["series"] == ref.aggregates["variant"]).all()
    assert ref.key() == ["variant", "scenario", "load_point", "client", "transport"]


def test_samples_are_read_on_first_use(ref):
    assert ref._samples is None or len(ref._samples)
    s = ref.samples
    assert len(s) and s["repeat"].dtype == np.int64


def test_series_name_client_and_transport_when_a_run_varies_them(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(REFERENCE, copy, ignore=shutil.ignore_patterns("plots", "report.*", "logs"))
    s = pd.read_csv(copy / "summary.csv", dtype=str, keep_default_na=False)
    stock = s[s["variant"] == "socketio-run-gevent"].assign(client="python-socketio")
    pd.concat([s, stock]).to_csv(copy / "summary.csv", index=False)
    r = reader.read(copy)
    names = set(r.aggregates.loc[r.aggregates["variant"] == "socketio-run-gevent", "series"])
    assert names == {"socketio-run-gevent · lean", "socketio-run-gevent · python-socketio"}


@pytest.mark.parametrize("make", [
    lambda p: p / "missing",
    lambda p: p,                                                     # no summary.csv
    lambda p: (p / "summary.csv").write_text("a,b\n1,2\n") and p,    # not a summary
    lambda p: (p / "summary.csv").write_bytes(b"\xff\xfe\x00garbage") and p,
])
def test_not_a_results_folder_is_one_line_usage_error(tmp_path, make):
    with pytest.raises(UsageError) as err:
        reader.read(make(tmp_path))
    assert "\n" not in str(err.value)
