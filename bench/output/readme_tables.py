"""README findings generated from committed runs: each marked section, one renderer.

A table in the README's findings that a committed results folder backs sits between

    <!-- generated: NAME (make findings) -->
    <!-- end generated: NAME -->

and ``make findings`` (``python -m bench.output.readme_tables``) rewrites it from that folder,
so the prose around it can be argued with but the figures cannot drift from their run.
``--check`` changes nothing and exits 1 when a section differs from what its run gives (the
test suite runs it). Every renderer reads the run through ``bench.analysis.reader`` and writes
numbers the way the report does (``bench.output.formatting``).
"""
import os
import re
import sys

from bench.analysis import compare, reader
from bench.output import findings, inpclaim
from bench.output.formatting import ms_short, row_flags
from bench.output.plots import style
from bench.plan.scenarios import MIXES
from bench.output.results import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
MARK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) \(make findings\) -->\n)(?P<body>.*?)"
                  r"(<!-- end generated: (?P=name) -->)", re.S)


class FindingsError(Exception):
    """A section names no renderer, or its run is missing; the message is one line."""


def _ms(value, low=float("nan"), high=float("nan")):
    """'1.66 [1.60–1.71]' (ms, with the interval where there is one), '–' when empty."""
    if value != value:
        return "–"
    span = f" [{ms_short(low)}–{ms_short(high)}]" if low == low and high == high else ""
    return f"{ms_short(value)}{span}"


def browser_table(run_dir):
    """The browser-versus-lean table: per variant, the Python client's p50 (the lean client, or
    the stock one where the server only polls) beside what the page saw."""
    data = reader.read(run_dir)
    agg = data.aggregates
    lines = ["| variant | Python client p50 | browser: frames (DevTools) p50 | ack callback p50 | reply "
             "painted p50 | click → reply painted p50 | INP | page send lag p99 | browser "
             "row |", "|---|---|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(agg["variant"]):
        lean = agg[(agg["variant"] == variant) & (agg["client"] != "browser")]
        page = agg[(agg["variant"] == variant) & (agg["client"] == "browser")]
        if not len(page):
            continue
        b = page.iloc[0]
        if not reader.has_data(b):
            lines.append(f"| {variant} | – | served nothing | | | | | | {b['reasons']} |")
            continue
        first = lean.iloc[0] if len(lean) else None
        lean_text = _ms(first["p50_us"], *compare.interval_of(first, "p50")[:2]) \
            if first is not None and reader.has_data(first) else "–"
        click_low, click_high = inpclaim.interval(data, b, "interaction_to_reply_p50")
        inp_low, inp_high = inpclaim.interval(data, b, "inp")
        state = "driver-bound" if b["driver_bound"] else "valid" if b["valid"] else "invalid"
        lines.append(
            f"| {variant} | {lean_text} | {_ms(b['devtools_p50_us'])} | "
            f"{_ms(b['p50_us'], *compare.interval_of(b, 'p50')[:2])} | "
            f"{_ms(b['paint_p50_us'])} | "
            f"{_ms(b['interaction_to_reply_p50_us'], click_low, click_high)} | "
            f"{_ms(b['inp_us'], inp_low, inp_high)} | {_ms(b['send_lag_p99_us'])} | {state} |")
    return "\n".join(lines) + "\n"


def _markdown(headers, rows):
    """A markdown table of ``headers`` and ``rows`` (cells already text)."""
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]) + "\n"


def _state(row):
    """What weakens a figure, beside it: ' (invalid, noisy, …)' from the report's own row
    flags, then the self-checks it failed; '' for a clean row."""
    marks = row_flags(row)
    return (f" ({', '.join(marks)})" if marks else "") + style.checks(row)


def sweep_table(run_dir):
    """Where each variant breaks: the sweep's knee per variant (the report's knee table)."""
    table = findings.knees(reader.read(run_dir))
    if table is None:
        raise FindingsError(f"{os.path.relpath(run_dir, ROOT)} has no sweep rows")
    return _markdown(table["headers"], table["rows"])


def blocking_table(run_dir):
    """Does one slow handler delay everyone: echo p50 / p99 per variant and blocking mix, with
    the p50's interval over repeats."""
    agg = reader.read(run_dir).aggregates
    rows = agg[agg["scenario"] == "blocking"]
    if not len(rows):
        raise FindingsError(f"{os.path.relpath(run_dir, ROOT)} has no blocking rows")
    mixes = sorted(dict.fromkeys(rows["mix"]), key=lambda m: MIXES.index(m) if m in MIXES
                   else len(MIXES))
    lines = []
    for variant, group in rows.groupby("variant", sort=True):
        cells = []
        for mix in mixes:
            found = group[group["mix"] == mix]
            r = found.iloc[0] if len(found) else None
            cells.append("–" if r is None or not reader.has_data(r) else
                         f"{_ms(r['p50_us'], *compare.interval_of(r, 'p50')[:2])} / "
                         f"{_ms(r['p99_us'])}{_state(r)}")
        served = sorted({t for t in group["transport"] if isinstance(t, str) and t})
        lines.append([variant + ("" if served in ([], ["websocket"]) else
                                 f" ({'/'.join(served)})"), *cells])
    return _markdown(["variant", *(f"{mix}: echo p50 / p99 ms" for mix in mixes)], lines)


REFERENCE = os.path.join("results", "reference")
RENDERERS = {"browser": (os.path.join(REFERENCE, "browser"), browser_table),
             "sweep": (os.path.join(REFERENCE, "sweep"), sweep_table),
             "blocking": (os.path.join(REFERENCE, "blocking"), blocking_table)}


def render(name):
    """The markdown of section ``name`` from its committed run."""
    if name not in RENDERERS:
        raise FindingsError(f"README section {name!r} names no renderer "
                            f"(known: {', '.join(RENDERERS)})")
    run, renderer = RENDERERS[name]
    path = os.path.join(ROOT, run)
    if not os.path.exists(os.path.join(path, "summary.csv")):
        raise FindingsError(f"README section {name!r}: its run {run} is not there")
    return renderer(path)


def rewrite(readme=README, check=False):
    """Rewrite every marked section of ``readme`` from its run (``check``: only compare);
    returns the names of the sections that differed."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    changed = []

    def fill(match):
        body = render(match.group("name"))
        if body != match.group("body"):
            changed.append(match.group("name"))
        return match.group(1) + body + match.group(4)

    new = MARK.sub(fill, text)
    if changed and not check:
        atomic_write(readme, new)
    return changed


def main(argv=None):
    """``python -m bench.output.readme_tables [--check] [README]``."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    try:
        changed = rewrite(paths[0] if paths else README, check=check)
    except (FindingsError, OSError) as exc:
        print(f"findings: {exc}", file=sys.stderr)
        return 2
    for name in changed:
        print(f"findings: {name} {'differs from its run' if check else 'rewritten'}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
