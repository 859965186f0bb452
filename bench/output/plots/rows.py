"""Which rows a chart draws: a scenario's aggregate rows, and its panels per load point."""
from bench.analysis.reader import SPLITS, has_data  # noqa: F401  (has_data: charts' test)


def splits(frame):
    """The columns (recipient, mix) that split this frame's load points further."""
    return [c for c in SPLITS if c in frame.columns and (frame[c] != "").any()]


def scenario_rows(data, scenario, fanout_all=True):
    """A scenario's aggregate rows (of Results or of an aggregate frame), by series.

    With ``fanout_all``, fan-out keeps only its all-recipients rows, and a failed step (no
    recipient split) counts as one of them, so it is shown where the others are.
    """
    agg = data if hasattr(data, "columns") else data.aggregates
    rows = agg[agg["scenario"] == scenario]
    if fanout_all and (rows["recipient"] != "").any():
        rows = rows[rows["recipient"].isin(["all", ""])].assign(recipient="all")
    return rows.sort_values("series")


def panels(rows):
    """[(title, rows)] per load point (× recipient/mix where the scenario has them), ordered
    by the load point's number, then by the split's first appearance."""
    keys = ["load_point", *splits(rows)]
    out = []
    for i, (key, group) in enumerate(rows.groupby(keys, sort=False)):
        key = key if isinstance(key, tuple) else (key,)
        order = group["load_value"].min()
        out.append(((order if order == order else float("inf"), i), key, group))
    out.sort(key=lambda t: t[0])
    return [(" · ".join(dict.fromkeys(str(k) for k in key if k != "")), g) for _, key, g in out]


def load_order(rows):
    """The load points of ``rows`` in numeric order (their ``load_value``), labels as written."""
    first = rows.groupby("load_point", sort=False)["load_value"].min()
    return list(first.sort_values(na_position="last", kind="stable").index)
