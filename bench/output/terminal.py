"""The table ``run`` prints at the end: one line per scenario, load point, variant and client,
repeats merged, every column as wide as its widest cell (nothing cut)."""
from bench.analysis.aggregate import aggregate, key_of
from bench.output import trust
from bench.output.formatting import ms

HEADERS = ("scenario", "load point", "variant", "client/transport", "p50 ms", "p99 ms",
           "driver", "ok/attempted", "valid", "trust")
RIGHT = {"p50 ms", "p99 ms", "driver", "ok/attempted"}
LEGEND = ("(* = written as the deadline: more than 1 − q of the messages timed out; "
          "driver = the driver's share of p50; - = too few samples; trust = the steps' "
          "self-checks: ok k/k passed, FAIL names the failed ones, still valid)")


def _latency(r, key):
    """A percentile cell: '-' when empty, '*' when written as the deadline."""
    text = ms(r[key])
    if text == "–":
        return "-"
    return text + ("*" if key[:-3] in str(r.get("censored", "")).split(",") else "")


def cells(r, repeats=()):
    """The printed cells of one aggregate row (``repeats``: its per-repeat rows)."""
    flag = "yes" if r["valid"] else ("DRIVER-BOUND" if r["driver_bound"] else "no")
    flag += " noisy" if r.get("noisy") else ""
    point = r["load_point"] + (f" [{r['recipient']}]" if r.get("recipient") else "")
    point += " [nodelay]" * bool(r.get("server_nodelay")) + " [py-spy]" * bool(r.get("profiled"))
    gc = r.get("server_gc")
    point += f" [gc {gc}]" if isinstance(gc, str) and gc not in ("", "default") else ""
    share = r.get("driver_share", float("nan"))
    return (r["scenario"], point, r["variant"],
            f"{r.get('client') or '-'}/{r['transport'] or 'failed'}",
            _latency(r, "p50_us"), _latency(r, "p99_us"),
            f"{100 * share:.0f}%" if share == share else "-", f"{r['ok']}/{r['attempted']}", flag,
            trust.plain(r, repeats))


def lines(rows):
    """The table as text lines: header, rule, one line per aggregate row, legend."""
    agg = sorted(aggregate(rows), key=lambda r: (r["scenario"], r["load_point"],
                                                 r.get("recipient") or "",
                                                 r["p50_us"] if r["p50_us"] == r["p50_us"]
                                                 else 1e18))
    repeats = {}
    for r in rows:
        if not r.get("aggregate"):
            repeats.setdefault(key_of(r), []).append(r)
    body = [cells(r, repeats.get(key_of(r), [])) for r in agg]
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h)
              for i, h in enumerate(HEADERS)]

    def line(values):
        return " ".join(v.rjust(w) if h in RIGHT else v.ljust(w)
                        for v, w, h in zip(values, widths, HEADERS)).rstrip()
    header = line(HEADERS)
    return [header, "-" * len(header), *map(line, body), LEGEND]
