"""Findings over the aggregate rows: downgrades, driver-bound rows, ranking, knees, fan-out,
blocking, and the client/transport side-by-side table — each stated with its numbers.
"""
import pandas as pd

from bench.analysis import reader
from bench.analysis.reader import has_data
from bench.output import plots, verdicts
from bench.output.formatting import ms, short, value_text, where
from bench.output.plots import style
from bench.output.plots.rows import panels, scenario_rows

def downgrades(agg):
    """Per variant and transport other than WebSocket: where, and the distinct reasons."""
    items = []
    for (variant, transport), g in agg[agg["transport"] != "websocket"].groupby(
            ["variant", "transport"], sort=False):
        reasons = dict.fromkeys(short(n.split("; measured over")[0], 200) for n in g["note"])
        items.append(f"{variant}: {transport or 'no transport (served nothing)'} in "
                     f"{len(g)} row(s) ({', '.join(where(r) for _, r in g.iterrows())}) — "
                     + " / ".join(reasons))
    return items


DRIVER_LACKED = {"driver_bound:send_lag": "send lag", "driver_bound:recv_wait": "receive wait",
                 "driver_bound:busy": "loop busy"}


def driver_bound(agg):
    """Per variant: the driver-bound rows and what the driver lacked (from their reasons)."""
    def lacked(r):
        codes = str(r.get("reasons") or "").split(";")
        return ", ".join(DRIVER_LACKED[c] for c in codes if c in DRIVER_LACKED) or "driver-bound"
    return [f"{variant}: " + ", ".join(f"{where(r)} ({lacked(r)})" for _, r in g.iterrows())
            for variant, g in agg[agg["driver_bound"]].groupby("variant", sort=False)]


def ranking(agg):
    """Per scenario and load point: fastest and slowest valid variant and their ratio."""
    items = []
    for scenario in dict.fromkeys(agg["scenario"]):
        for title, rows in panels(scenario_rows(agg, scenario)):
            ranked = rows[rows["valid"] & rows.apply(has_data, axis=1)
                          & rows["p50_us"].notna()].sort_values("p50_us")
            left = [f"{r['series']} ({'no data' if not has_data(r) else style.flag(r)})"
                    for _, r in rows.iterrows() if r["series"] not in set(ranked["series"])]
            head = f"{scenario} · {title}: "
            if len(ranked) < 2:
                text = head + f"fewer than two valid variants ({len(ranked)}), not ranked"
            else:
                fast, slow = ranked.iloc[0], ranked.iloc[-1]
                p99 = slow["p99_us"] / fast["p99_us"]
                text = head + (
                    f"fastest {fast['series']} (p50 {ms(fast['p50_us'])} ms, p99 "
                    f"{ms(fast['p99_us'])} ms), slowest {slow['series']} (p50 "
                    f"{ms(slow['p50_us'])} ms, p99 {ms(slow['p99_us'])} ms): "
                    f"{slow['p50_us'] / fast['p50_us']:.2f}× at p50, "
                    + ("–" if pd.isna(p99) else f"{p99:.2f}×") + " at p99")
            items.append(text + (f"; not ranked: {', '.join(left)}" if left else ""))
    return items


def knees(data):
    """The sweep's knees per variant with bound and first failing rate, or None."""
    k = plots.knees_per_variant(data)
    if k.empty:
        return None
    rows = []
    for _, r in k.sort_values("knee_msg_s", ascending=False, na_position="last").iterrows():
        spread = (f"{r['low']:,.0f}–{r['high']:,.0f}" if r["repeats"] > 1
                  and pd.notna(r["low"]) else "")
        rows.append([r["variant"],
                     "none (first step failed)" if r["bound"] == "none" else
                     ("≥ " if r["bound"] == "lower" else "") + (
                         f"{r['knee_msg_s']:,.0f}" if pd.notna(r["knee_msg_s"]) else "no knee"),
                     r["bound"] or "–",
                     f"{r['next_msg_s']:,.0f}" if pd.notna(r["next_msg_s"]) else "–",
                     f"{r['repeats']}" + (f" ({spread})" if spread else ""), r["reason"]])
    return dict(slo="; ".join(k["slo"].unique()),
                headers=["variant", "knee msg/s", "bound", "next step msg/s (first failing)",
                         "repeats (range)", "reason"], rows=rows)


def fanout_findings(agg):
    """Per series and load point: last against first recipient of a broadcast (fan-out and
    emit rows: every row with a recipient)."""
    fan = agg[agg["recipient"] != ""]
    items = []
    for (series, lp), g in fan.groupby(["series", "load_point"]):
        first, last = (g[g["recipient"] == k] for k in ("first", "last"))
        if first.empty or last.empty or not (has_data(first.iloc[0]) and has_data(last.iloc[0])):
            items.append(f"{series} · {lp}: first/last recipient not both measured")
            continue
        f, la = first.iloc[0], last.iloc[0]
        items.append(f"{series} · {lp}: last recipient p50 {ms(la['p50_us'])} ms vs first "
                     f"{ms(f['p50_us'])} ms ({la['p50_us'] / f['p50_us']:.2f}×)"
                     f"{' [' + style.flag(la) + ']' if style.flag(la) != 'ok' else ''}")
    return items


BLOCKING_WORDS = {"verified": "one slow handler delays everyone",
                  "refuted": "no material delay", "inconclusive": "cannot tell"}


def blocking_findings(agg):
    """Per series and blocking mix: is echo traffic delayed against echo-only?"""
    blk = agg[(agg["scenario"] == "blocking") & (agg["mix"] != "")]
    items = []
    for series, g in blk.groupby("series"):
        base = g[g["mix"] == "echo-only"]
        for _, r in g[g["mix"] != "echo-only"].iterrows():
            if base.empty:
                items.append(f"{series} · {r['mix']}: no echo-only baseline")
                continue
            verdict, why = verdicts.judge_pair(r, base.iloc[0])
            items.append(f"{series} · {r['mix']} vs echo-only: "
                         f"{BLOCKING_WORDS.get(verdict, verdict)} — {why}")
    return items


def delta(row, ref, metric):
    """``row``'s metric minus the reference row's, in ms ('–' where either cell is empty)."""
    if row.name == ref.name:
        return "reference"
    a, b = row[f"{metric}_us"], ref[f"{metric}_us"]
    return "–" if pd.isna(a) or pd.isna(b) else f"{(a - b) / 1000:+.3f}"


def client_transport(agg):
    """Rows of variants measured with several (client, transport) at one load point, and the
    p50/p99 difference of each from the group's lean · websocket row (or its first)."""
    key = [c for c in reader.key_columns(agg) if c not in ("client", "transport")]
    rows = []
    for _, g in agg.groupby(key, sort=False):
        g = g[g.apply(has_data, axis=1)]
        if g[["client", "transport"]].drop_duplicates().shape[0] < 2:
            continue
        lean = g[(g["client"] == "lean") & (g["transport"] == "websocket")]
        ref = (lean if len(lean) else g).iloc[0]
        for _, r in g.sort_values(["client", "transport"]).iterrows():
            rows.append([r["variant"], where(r), r["client"] or "?", r["transport"],
                         value_text(r, "p50"), value_text(r, "p99"),
                         *[delta(r, ref, m) for m in verdicts.METRICS]])
    return rows
