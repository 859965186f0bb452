"""Server logs and row notes boiled down: each distinct message once per variant.

``logs/<variant>.log`` lines that mention Warning, Error or Traceback are counted and their first
distinct ones kept; a row's note (clauses joined by "; " and repeats by " | ") is split into its
distinct messages so a message repeated across repeats or load points is shown once.
"""
import os
import re

LOG_PATTERN = re.compile(r"Warning|Error|Traceback")
LOG_EXAMPLES = 4
LINE_LIMIT = 160
SERVER_ECHO = re.compile(r" \(server: (.+)\)$")


def log_summary(run_dir, variants):
    """[variant, count, [first distinct lines]] of every variant with or without a log."""
    logs = os.path.join(run_dir, "logs")
    names = sorted(set(variants) | {f[:-4] for f in os.listdir(logs) if f.endswith(".log")}
                   if os.path.isdir(logs) else set(variants))
    rows = []
    for name in names:
        path = os.path.join(logs, f"{name}.log")
        if not os.path.exists(path):
            rows.append([name, "no log", []])
            continue
        with open(path, errors="replace") as f:
            hits = [line.strip() for line in f if LOG_PATTERN.search(line)]
        rows.append([name, str(len(hits)),
                     [h[:LINE_LIMIT] for h in list(dict.fromkeys(hits))[:LOG_EXAMPLES]]])
    return rows


def messages(note):
    """The distinct messages of a note, in order: its clauses, each without a trailing
    "(server: …)" whose text the clause or an earlier one already says."""
    out = []
    for part in re.split(r" \| |; ", str(note or "")):
        part = part.strip()
        echo = SERVER_ECHO.search(part)
        if echo and (part.count(echo.group(1)) > 1 or any(echo.group(1) in m for m in out)):
            part = part[:echo.start()]
        if part and part not in out:
            out.append(part)
    return out


def notes_per_variant(rows):
    """[(variant, [(message, [where…])])]: every distinct note message once per variant,
    with the places (load points) it was said at."""
    out = {}
    for r in rows:
        for message in messages(r["note"]):
            places = out.setdefault(r["variant"], {}).setdefault(message, [])
            if r["where"] not in places:
                places.append(r["where"])
    return [(v, list(m.items())) for v, m in out.items()]
