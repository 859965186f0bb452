"""Report sections that say why: TCP_NODELAY pairs, profiler overhead, where the time went.

All from the results folder alone (``bench.analysis.reader``): summary.csv's ``server_nodelay``
and ``profiled`` columns, and ``profiles/profiles.csv`` + ``profiles/top.csv`` written by a
``--profile`` run. :func:`items` is what the report templates loop over: headings,
paragraphs and tables, in order.
"""
import os

import numpy as np
import pandas as pd

from bench.analysis.reader import KEY_EXTRAS, truthy
from bench.output import causes
from bench.output.formatting import ms, ratio

TOP_PER_VARIANT = 8
NATIVE = "(native code: no Python frame, e.g. the event loop)"


def _label(column, value):
    """A key part as the tables show it: toggles by name where on, "" where off."""
    if column in ("server_nodelay", "profiled"):
        return {"server_nodelay": "TCP_NODELAY", "profiled": "profiled"}[column] \
            if truthy(value) else ""
    return "" if value is None or value != value else str(value)


def pairs(agg, column):
    """Aggregate rows matched off/on for a bool column: [(key labels, off row, on row)]."""
    if column not in agg or len(agg) == 0:
        return []
    flags = agg[column].map(truthy)
    if not flags.any() or flags.all():
        return []
    other = [e for e in KEY_EXTRAS  # the extras this run varies (not a lone client name)
             if e in agg and e != column and agg[e].astype(str).nunique() > 1]
    keys = ["variant", "scenario", "load_point", *other]

    def key(r):
        return tuple(_label(k, r[k]) for k in keys)
    off = {key(r): r for _, r in agg[~flags].iterrows()}
    out = [(key(on), off[key(on)], on) for _, on in agg[flags].iterrows() if key(on) in off]
    order = (lambda r: r.get("load_value", np.nan))
    return sorted(out, key=lambda t: (t[0][1], order(t[2]) if order(t[2]) == order(t[2])
                                      else float("inf"), t[0]))


def _held(row):
    """Whether the Nagle detector found its signature (reason ``nagle:…``) or the same peak
    under TCP_NODELAY (``cluster:…``) in the row."""
    codes = str(row.get("reasons") or "").split(";")
    return "yes" if any(c.startswith("nagle:") for c in codes) else (
        "cluster, not Nagle" if any(c.startswith("cluster:") for c in codes) else "")


def nodelay_blocks(data):
    """The TCP_NODELAY section: each step without and with, side by side (none without pairs)."""
    found = pairs(data.aggregates, "server_nodelay")
    if not found:
        return []
    table = []
    for key, off, on in found:
        where = " · ".join(dict.fromkeys(str(k) for k in key[1:] if k))
        table.append([key[0], where, ms(off["p50_us"]), ms(on["p50_us"]),
                      ratio(on["p50_us"], off["p50_us"]), ms(off["p99_us"]),
                      ms(on["p99_us"]), ratio(on["p99_us"], off["p99_us"]),
                      _held(off) or "no", _held(on) or "no"])
    return [("h", 2, "TCP_NODELAY on the server: without and with, side by side"),
            ("p", "Each step ran twice in one shuffled plan (`--server-nodelay both`): the "
                  "server's accepted sockets without and with TCP_NODELAY. A ratio well below "
                  "1 is Nagle's algorithm holding a reply until the client's ACK; the detector "
                  "column says whether the latencies cluster at the client's delayed-ACK timer "
                  "or at the per-connection send interval."),
            ("table", ["variant", "where", "p50 off", "p50 on", "on/off", "p99 off", "p99 on",
                       "on/off", "Nagle peak (off)", "peak (on)"], table)]


def overhead_blocks(data):
    """The profiler-overhead section: the same steps without and with py-spy attached."""
    found = pairs(data.aggregates, "profiled")
    if not found:
        return []
    table = [[key[0], " · ".join(dict.fromkeys(str(k) for k in key[1:] if k)), ms(off["p50_us"]),
              ms(on["p50_us"]), ratio(on["p50_us"], off["p50_us"]), ms(off["p99_us"]),
              ms(on["p99_us"]), ratio(on["p99_us"], off["p99_us"]),
              f"{off['server_cpu_pct']:.0f} → {on['server_cpu_pct']:.0f}"
              if not pd.isna(off["server_cpu_pct"]) and not pd.isna(on["server_cpu_pct"])
              else "–"]
             for key, off, on in found]
    p50 = [on["p50_us"] / off["p50_us"] for _, off, on in found
           if off["p50_us"] and not pd.isna(off["p50_us"]) and not pd.isna(on["p50_us"])]
    summary = (f"Median p50 ratio profiled/unprofiled over {len(p50)} pairs: "
               f"{np.median(p50):.2f}×." if p50 else "")
    return [("h", 3, "Profiler overhead (`--profile both`)"),
            ("p", "The same steps without and with py-spy attached (it pauses the server at "
                  "each sample). " + summary),
            ("table", ["variant", "where", "p50 off", "p50 profiled", "ratio", "p99 off",
                       "p99 profiled", "ratio", "server CPU %"], table)]


def load_profiles(run_dir):
    """(profiles.csv, top.csv) frames, empty when the run was not profiled."""
    base = os.path.join(run_dir, "profiles")
    read = (lambda name: pd.read_csv(os.path.join(base, name), dtype={"repeat": str})
            if os.path.exists(os.path.join(base, name)) else pd.DataFrame())
    return read("profiles.csv"), read("top.csv")


def where_time_went(top):
    """Per variant: functions by self samples summed over its profiled steps, % of them."""
    if top.empty:
        return {}
    top = top.copy()
    top["function"] = top["function"].where(~top["function"].astype(str).str.match(
        r"^process \d+$"), NATIVE)
    top["file"] = top["file"].fillna("")
    out = {}
    for variant, rows in top.groupby("variant", sort=True):
        # each step's top list covers most of its samples; shares are of the listed samples
        by = rows.groupby(["function", "file"])["self_samples"].sum().sort_values(
            ascending=False)
        total = by.sum()
        out[variant] = [(f, fl, int(n), 100.0 * n / total) for (f, fl), n in by.items()]
    return out


def profile_blocks(data):
    """Where the time went: top self-time functions per variant and every profiled step."""
    profiles, top = load_profiles(data.run_dir)
    if profiles.empty:
        return []
    blocks = [("h", 2, "Where the time went (py-spy, measured window only)"),
              ("p", "Samples taken only while a server thread held the GIL (`py-spy --gil`, "
                    "200 Hz, the server's whole process tree), so a function's share is a "
                    "share of the time the server ran Python; GIL held = recorded samples ÷ "
                    "(rate × sampled seconds). Self time: the innermost frame of each sample.")]
    tables = where_time_went(top)
    for variant, rows in tables.items():
        mine = profiles[profiles["variant"] == variant]
        gil = pd.to_numeric(mine["gil_held_pct"], errors="coerce").dropna()
        gil_text = f"GIL held {gil.median():.0f} % of the window (median of {len(gil)} " \
                   f"steps)" if len(gil) else "GIL share not measured"
        blocks += [("h", 3, f"{variant}: top self-time functions"), ("p", gil_text),
                   ("table", ["function", "file", "self samples", "% of samples"],
                    [[f"`{f}`", fl, n, f"{pct:.1f}"] for f, fl, n, pct in
                     rows[:TOP_PER_VARIANT]])]
    steps = data.repeats
    table = []
    for _, p in profiles.iterrows():
        match = steps[(steps["variant"] == p["variant"]) & (steps["scenario"] == p["scenario"])
                      & (steps["load_point"].astype(str) == str(p["load_point"]))
                      & (steps["repeat"].astype(str) == str(p["repeat"]))]
        if "profiled" in match:
            match = match[match["profiled"].map(truthy)]
        if "server_nodelay" in match:
            match = match[match["server_nodelay"].map(truthy) == truthy(p.get("server_nodelay"))]
        r = match.iloc[0] if len(match) else None
        first = top[(top["variant"] == p["variant"]) & (top["scenario"] == p["scenario"])
                    & (top["load_point"].astype(str) == str(p["load_point"]))
                    & (top["repeat"].astype(str) == str(p["repeat"]))
                    & (top["server_nodelay"].astype(str) == str(p["server_nodelay"]))]
        lead = first.sort_values("rank").iloc[0] if len(first) else None
        links = (f"[flame graph]({p['profile_svg']}) · [speedscope]({p['profile_speedscope']})"
                 if isinstance(p.get("profile_svg"), str) and p["profile_svg"] else
                 str(p.get("profile_error") or "no profile"))
        table.append([p["variant"], p["scenario"], p["load_point"], p["repeat"],
                      "on" if truthy(p.get("server_nodelay")) else "off",
                      ms(r["p50_us"]) if r is not None else "–",
                      ms(r["p99_us"]) if r is not None else "–",
                      f"{p['gil_held_pct']:.0f}" if not pd.isna(p["gil_held_pct"]) else "–",
                      (f"`{lead['function']}` {lead['pct_samples']:.0f} %"
                       if lead is not None else "–"), links])
    blocks += [("h", 3, "Profiled steps"),
               ("table", ["variant", "scenario", "load point", "repeat", "TCP_NODELAY",
                          "p50 ms", "p99 ms", "GIL held %", "top function", "profile"], table)]
    return blocks + overhead_blocks(data)


def blocks(data):
    """Every explain section that applies to this run (none for a plain run), as blocks:
    ("h", level, text), ("p", text), ("table", headers, rows)."""
    return nodelay_blocks(data) + profile_blocks(data) + causes.blocks(data)


def items(data):
    """The blocks as plain dicts for the report templates: kind h / p / table."""
    out = []
    for b in blocks(data):
        if b[0] == "h":
            out.append(dict(kind="h", level=b[1], text=b[2]))
        elif b[0] == "p":
            out.append(dict(kind="p", text=b[1]))
        else:
            out.append(dict(kind="table", headers=b[1],
                            rows=[[str(c) for c in row] for row in b[2]]))
    return out
