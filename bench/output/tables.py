"""The report's tables: the run's metadata and one compact table per scenario."""
import pandas as pd

from bench.output import logscan, trust
from bench.output.formatting import flags, interval_method, ms, share, value_text, where
from bench.output.plots.rows import panels, splits

TRUST = "Can I trust this row?"


def metadata(data):
    """(field, value) rows describing the run: when, where, plan, pinning, packages."""
    m, host = data.meta, data.meta.get("host", {})
    options = m.get("plan", {}).get("options", {})
    pin = m.get("pinning", {})
    calib = m.get("calibration") or {}
    rows = [
        ("run folder", data.name),
        ("started / finished (UTC)", f"{m.get('started_utc', '?')} / {m.get('finished_utc', '?')}"),
        ("status", f"{m.get('status', '?')}, {m.get('steps_done', '?')} of "
                   f"{m.get('plan', {}).get('steps', '?')} steps"),
        ("machine", f"{host.get('cpu_model', '?')}, {host.get('cores', '?')} cores, "
                    f"{host.get('system', '')} {host.get('kernel', '')} {host.get('machine', '')}"),
        ("Python", host.get("python", "?")),
        ("harness", f"{m.get('harness_version', '?')} (git {m.get('git_commit', '?')}), "
                    f"schema {m.get('schema_version', '?')}"),
        ("plan", ", ".join(f"{k}={options[k]}" for k in (
            "duration", "warmup", "repeats", "rate", "connections", "payload", "timeout",
            "deadline_ms", "client", "transport", "arrivals", "seed", "quick") if k in options)),
        ("variants", ", ".join(options.get("variants", []))
         or ", ".join(sorted(data.aggregates["variant"].unique()))),
        ("scenarios", ", ".join(options.get("scenarios", [])) or ", ".join(data.scenarios())),
        ("pinning", f"server CPUs {pin.get('server_cpus')}, driver CPUs {pin.get('driver_cpus')}"
         if pin.get("enabled") else "off"),
        ("calibration", ", ".join(f"{k}={v}" for k, v in calib.items()) or "not run"),
    ]
    rows += [(k, v) for k, v in (  # the user's own app, traffic and server knobs
        ("app override", (m.get("app_override") or {}).get("text")),
        ("scenario file", m.get("scenario_file")),
        ("server knobs", ", ".join(f"{k}={v}" for k, v in (m.get("server_knobs") or {}).items())))
        if v]
    rows += [(f"packages ({env})", ", ".join(f"{k} {v}" for k, v in versions.items() if v))
             for env, versions in m.get("packages", {}).items()]
    return rows


def replies(row):
    """How a row of the user's traffic matched its replies and what else the server sent:
    ``seq · 9 unsolicited · pushed message=3``."""
    said = [row["reply_match"] or "–"]
    if row["unsolicited"] == row["unsolicited"] and row["unsolicited"]:
        said.append(f"{int(row['unsolicited'])} unsolicited")
    if row["pushed"]:
        said.append(f"pushed {row['pushed'].replace(';', ', ')}")
    return " · ".join(said)


def scenario_tables(data):
    """Per scenario: the table of its aggregate rows (fastest first in each panel), each with
    whether to trust it, and each distinct note message once per variant."""
    agg, out = data.aggregates, []
    repeats_of = trust.repeats_of(data)
    varied = [c for c in ("client", "server_nodelay", "profiled", "server_gc")
              if agg[c].astype(str).nunique() > 1]
    for scenario in data.scenarios():
        rows = agg[agg["scenario"] == scenario]
        extra = [e for e in splits(rows) if (rows[e] != rows["load_point"]).any()]
        matched = (rows["reply_match"] != "").any()   # the user's traffic: how replies matched
        headers = ["variant", "load point", *extra, *varied, "transport", "achieved msg/s",
                   "p50 ms", "p99 ms", "interval", "p99.9 ms", "max ms", "ok %",
                   "driver share", "censored", *(["replies"] if matched else []), TRUST, "flags"]
        table, noted = [], []
        for _, group in panels(rows):
            for _, r in group.sort_values("p50_us", na_position="last").iterrows():
                okp = f"{100 * r['ok'] / r['attempted']:.2f}" if r["attempted"] else "–"
                table.append([r["variant"], r["load_point"], *[r[e] for e in extra],
                              *[r[c] for c in varied], r["transport"] or "none",
                              "–" if pd.isna(r["achieved_rate"]) else f"{r['achieved_rate']:,.0f}",
                              value_text(r, "p50"), value_text(r, "p99"), interval_method(r),
                              value_text(r, "p999"), ms(r["max_us"]), okp,
                              share(r["driver_share"]), r["censored"] or "–",
                              *([replies(r)] if matched else []),
                              trust.cell(r, repeats_of(r)), flags(r)])
                noted.append(dict(variant=r["variant"], note=r["note"], where=where(r)))
        out.append(dict(name=scenario, headers=headers, rows=table,
                        numeric=[h.endswith((" ms", "msg/s", " %", "share")) for h in headers],
                        notes=logscan.notes_per_variant(noted), legend=trust.LEGEND))
    return out
