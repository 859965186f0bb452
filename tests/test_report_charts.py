"""The report's charts at their worst: the longest variant names the registry has, twice as many
series (each also over the stock client and polling), every kind of chart — nothing drawn
(labels, legends, footers, titles) may lie outside its figure; one colour per name, derived
from the name, the same in every chart."""
import math
import os
import shutil
import tomllib

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.text import Text

from bench.analysis import reader
from bench.output import capacity_chart, comparison, plots
from bench.output.plots import style
from bench.analysis import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "results", "reference")
TOLERANCE_PX = 1.0


def longest_names(n):
    with open(os.path.join(ROOT, "servers", "variants.toml"), "rb") as f:
        names = list(tomllib.load(f)["variants"])
    return sorted(names, key=lambda v: (-len(v), v))[:n]


def _rename(frame, names):
    if "variant" in frame:
        frame["variant"] = frame["variant"].map(lambda v: names.get(v, v))
    return frame


@pytest.fixture(scope="module")
def worst(tmp_path_factory):
    """The reference run with the longest names, every series doubled (stock client over
    polling beside lean over WebSocket), and sweep, fan-out, blocking, TCP_NODELAY and capacity
    rows made from its own rows so every chart applies."""
    out = tmp_path_factory.mktemp("worst") / "reference"
    shutil.copytree(REFERENCE, out, ignore=shutil.ignore_patterns("plots", "report.*", "hlog",
                                                                 "capacity"))
    s = pd.read_csv(out / "summary.csv", dtype=str, keep_default_na=False)
    names = dict(zip(sorted(s["variant"].unique()), longest_names(s["variant"].nunique())))
    s = _rename(s, names)
    stock = s.assign(client="python-socketio", transport="polling")
    rate = s[s["scenario"] == "rate"]
    echo = s[s["scenario"] == "echo"]
    extra = [rate.assign(scenario="sweep"),
             *[echo.assign(scenario="fanout", recipient=r) for r in ("first", "median", "last",
                                                                       "all")],
             *[echo.assign(scenario="blocking", mix=m) for m in ("echo-only", "sleep-blockers")],
             rate.assign(server_nodelay="True")]
    pd.concat([s, stock, *extra]).to_csv(out / "summary.csv", index=False)
    for name in ("samples.csv.gz", "resources.csv"):
        frame = pd.read_csv(out / name, dtype=str, keep_default_na=False)
        _rename(frame, names).to_csv(out / name, index=False)
    pd.DataFrame([dict(variant=v, knee_msg_s=1600 * (i + 1), next_msg_s=3200 * (i + 1),
                       bound="exact" if i % 2 else "lower", slo="p99 <= 50 ms",
                       reason="p99 over the SLO at the next step, a long reason " * 3, repeat=1)
                  for i, v in enumerate(names.values())]).to_csv(out / "knees.csv", index=False)
    cap = pd.read_csv(os.path.join(REFERENCE, "capacity", "capacity.csv"))
    cap = pd.concat([cap.assign(variant=v) for v in names.values()])
    cap.to_csv(out / "capacity.csv", index=False)
    return str(out)


def outside(fig):
    """Every visible, non-empty text and legend whose drawn extent leaves the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    bad = []
    ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for t in axis.get_ticklabels(which="both")}     # drawn only inside the view
    artists = [t for t in fig.findobj(Text)
               if t.get_visible() and t.get_text().strip() and id(t) not in ticks]
    artists += [a.get_legend() for a in fig.axes if a.get_legend()] + list(fig.legends)
    for artist in artists:
        if not artist.get_visible() or (artist.axes and not artist.axes.get_visible()):
            continue
        e = artist.get_window_extent(renderer)
        if not all(math.isfinite(v) for v in (e.x0, e.x1, e.y0, e.y1)) or e.width == 0:
            continue
        if (e.x0 < box.x0 - TOLERANCE_PX or e.x1 > box.x1 + TOLERANCE_PX
                or e.y0 < box.y0 - TOLERANCE_PX or e.y1 > box.y1 + TOLERANCE_PX):
            bad.append((type(artist).__name__, getattr(artist, "get_text", lambda: "")()[:60],
                        tuple(round(v) for v in (e.x0, e.y0, e.x1, e.y1))))
    for ax in fig.axes:                     # its drawn tick labels, axis labels, title
        if ax.get_visible():
            e = ax.get_tightbbox(renderer)
            if e.x0 < box.x0 - TOLERANCE_PX or e.x1 > box.x1 + TOLERANCE_PX \
                    or e.y0 < box.y0 - TOLERANCE_PX or e.y1 > box.y1 + TOLERANCE_PX:
                bad.append(("axes", ax.get_title()[:60], tuple(round(v) for v in e.bounds)))
    tight = fig.get_tightbbox(renderer)
    w, h = fig.get_size_inches()
    if tight.x0 < -0.01 or tight.y0 < -0.01 or tight.x1 > w + 0.01 or tight.y1 > h + 0.01:
        bad.append(("tight bbox", "", (tight.x0, tight.y0, tight.x1, tight.y1, w, h)))
    return bad


def test_the_worst_case_has_every_chart_and_the_long_names(worst):
    data = reader.read(worst)
    built = []
    for name, _, build in plots.charts(data):
        fig = build()
        if fig is not None:
            built.append(name)
            plt.close(fig)
    for name in ("spectrum-echo", "bars-rate", "cdf-rate", "timeline-rate", "sweep-throughput",
                 "sweep-knees", "fanout", "blocking", "resources", "nodelay"):
        assert name in built
    longest = longest_names(1)[0]
    assert any(s.startswith(longest) and s.endswith("python-socketio · polling")
               for s in data.summary["series"])


def test_no_chart_draws_outside_its_figure(worst):
    data = reader.read(worst)
    problems = {}
    for name, _, build in plots.charts(data):
        fig = build()
        if fig is None:
            continue
        try:
            found = outside(fig)
            if found:
                problems[name] = found[:3]
        finally:
            plt.close(fig)
    fig = capacity_chart.figure(capacity_chart.read(worst))
    try:
        if outside(fig):
            problems["capacity"] = outside(fig)[:3]
    finally:
        plt.close(fig)
    assert not problems, problems


def test_the_compare_chart_fits_too(worst, tmp_path):
    slow = tmp_path / "slow"
    shutil.copytree(worst, slow, ignore=shutil.ignore_patterns("plots", "report.*"))
    s = pd.read_csv(slow / "summary.csv", dtype=str, keep_default_na=False)
    s["p50_us"] = pd.to_numeric(s["p50_us"]).mul(3).astype(str)
    s.to_csv(slow / "summary.csv", index=False)
    base, new, rows, *_ = compare.comparison(worst, str(slow))
    fig = comparison.figure(base, new, rows)
    try:
        assert len(rows) > 20 and not outside(fig)
    finally:
        plt.close(fig)


def test_a_name_has_one_colour_from_its_name_in_every_chart(worst):
    """The colour depends on the name only (not on which other names a run has, barring a
    hash collision among them), differs between the series of a run, and is what each chart
    draws the name with."""
    data = reader.read(worst)
    pal = style.colours(data)
    series = sorted(data.summary["series"].unique())
    assert len({pal[s] for s in series}) == min(len(series), len(style.PALETTE))
    for name in pal:
        assert style.palette([name])[name] == style.PALETTE[style.slot(name)]
    names = longest_names(8)
    everyone = style.palette(names)
    unique = [n for n in names if [style.slot(m) for m in names].count(style.slot(n)) == 1]
    assert unique
    for subset in (names[:3], names[3:], unique):
        assert all(style.palette(subset)[n] == everyone[n] for n in subset if n in unique)
    fig = plots.spectrum(data, "rate")
    try:
        drawn = {line.get_label().split(" [")[0]: line.get_color()
                 for ax in fig.axes for line in ax.get_lines() if line.get_label()[:1] != "_"}
        assert drawn and all(pal[name] == colour for name, colour in drawn.items()), drawn
    finally:
        plt.close(fig)
    fig = plots.timeline(data, "rate")
    try:
        for ax in fig.axes:
            title = ax.get_title().split(" [")[0].split(" (")[0]
            if title in pal and ax.collections:
                assert tuple(ax.collections[0].get_facecolor()[0][:3]) == pytest.approx(
                    plt.matplotlib.colors.to_rgb(pal[title]))
    finally:
        plt.close(fig)


def test_the_check_sees_a_clipped_label_and_fit_repairs_it():
    fig, ax = plt.subplots(figsize=(3, 2), layout="constrained")
    try:
        ax.set_xlabel("a label far wider than its three-inch figure " * 3)
        fig.legend(handles=ax.plot([1, 2], label="gunicorn-gevent-websocket · python-socketio"),
                   loc="outside right upper")
        assert outside(fig)
        style.fit(fig)
        assert not outside(fig)
    finally:
        plt.close(fig)
