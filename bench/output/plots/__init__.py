"""Every chart of one results folder (from ``bench.analysis.reader``): which apply, and their PNGs.

Charts receive numbers (typed frames), never parse labels. Each series (variant, or variant ·
client · transport) has one colour in every chart; rows that are not clean measurements are
marked, not hidden (see ``style.MARKING``); an empty percentile cell is left out, never drawn
as 0. The modules: ``style`` (look), ``rows`` (which rows), ``latency`` (spectrum, CDF, bars),
``sweep``, ``fanout``, ``blocking``, ``timeseries`` (timeline, resources), ``claims``,
``browser`` (the INP claim's chart).
"""
import functools
import os

from bench.output.claims import CLAIMS
from bench.plan.scenarios import SCENARIOS
from bench.output import inpclaim
from bench.output.plots.blocking import blocking
from bench.output.plots.browser import browser_views
from bench.output.plots.claims import claim
from bench.output.plots.fanout import fanout
from bench.output.plots.latency import bars, cdf, spectrum
from bench.output.plots.nodelay import nodelay
from bench.output.plots.style import MARKING, plt
from bench.output.plots.sweep import knee_bars, knees_per_variant, throughput
from bench.output.plots.timeseries import resources, timeline

__all__ = ["MARKING", "bars", "blocking", "browser_views", "cdf", "claim", "charts", "fanout", "knee_bars",
           "knees_per_variant", "resources", "save_all", "spectrum", "throughput", "timeline"]


# A scenario record's ``chart`` → the charts it adds beside every scenario's spectrum, CDF
# and timeline: (file name suffix, title, builder(data, scenario)); "fanout" and "blocking"
# replace the p50/p99 bars, which cannot show recipients or mixes side by side.
OWN_CHARTS = {
    "sweep": (("throughput", "latency vs achieved throughput", throughput),),
    "fanout": (("", "first/median/last recipient", fanout),),
    "blocking": (("", "mixes side by side", blocking),),
}
WITHOUT_BARS = ("fanout", "blocking")


def own_chart(scenario):
    """The ``chart`` of a scenario's record ("bars" for a name no record has)."""
    record = SCENARIOS.get(scenario)
    return record.chart if record else "bars"


def charts(data):
    """(file name, title, builder) of every chart that may apply to this run."""
    out = [(f"claim-{i}", spec["title"], functools.partial(claim, data, spec))
           for i, spec in enumerate(CLAIMS, 1)]
    out.append((f"claim-{len(CLAIMS) + 1}", inpclaim.TITLE,
                functools.partial(browser_views, data, inpclaim.TITLE)))  # None without browser rows
    for scenario in data.scenarios():
        out.append((f"spectrum-{scenario}", f"{scenario}: percentile spectrum",
                    functools.partial(spectrum, data, scenario)))
        out.append((f"cdf-{scenario}", f"{scenario}: latency CDF",
                    functools.partial(cdf, data, scenario)))
        if own_chart(scenario) not in WITHOUT_BARS:
            out.append((f"bars-{scenario}", f"{scenario}: p50 and p99",
                        functools.partial(bars, data, scenario)))
    for scenario in data.scenarios():
        for suffix, title, build in OWN_CHARTS.get(own_chart(scenario), ()):
            out.append(("-".join(filter(None, [scenario, suffix])), f"{scenario}: {title}",
                        functools.partial(build, data, scenario)))
    out.append(("sweep-knees", "sweep: knee per variant",  # from knees.csv, whatever ran
                functools.partial(knee_bars, data)))
    for scenario in data.scenarios():
        out.append((f"timeline-{scenario}", f"{scenario}: latency over time",
                    functools.partial(timeline, data, scenario)))
    out.append(("resources", "resources: CPU and RSS", functools.partial(resources, data)))
    out.append(("nodelay", "TCP_NODELAY: without and with",
                functools.partial(nodelay, data)))  # None without pairs
    return out


def save_all(data, out_dir):
    """Write every applicable chart as PNG; [(name, title, path)] of those written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, title, build in charts(data):
        fig = build()
        if fig is None:
            continue
        path = os.path.join(out_dir, f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append((name, title, path))
    return written
