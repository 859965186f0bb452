"""The Jinja2 environment of every document the harness writes (report and compare, .md and .html).

Text carries two inline marks, **bold** and `code` (plus [links](url)); Markdown keeps them,
HTML turns them into tags. Flags become short badges whose meaning shows on hover.
"""
import os
import re

import jinja2
import markupsafe

from bench.output.formatting import FLAGS

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def md_cell(value):
    """A value as one Markdown table cell (pipes escaped, no line breaks)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def inline(text):
    """HTML of a text with the report's inline marks: **bold**, `code` and [links](url)."""
    text = str(markupsafe.escape(str(text)))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s\"]+)\)", r'<a href="\2">\1</a>', text)
    return markupsafe.Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", text))


def badges(text):
    """HTML of a flags cell ('valid, **driver-bound**, noisy'): one badge per flag, its
    meaning in the title attribute (shown on hover)."""
    out = []
    for flag in [f.strip().strip("*") for f in str(text).split(",") if f.strip()]:
        meaning = FLAGS.get(flag, "a clean measurement" if flag == "valid" else flag)
        kind = "ok" if flag == "valid" else ("bad" if flag in ("invalid", "driver-bound")
                                             else "warn")
        out.append(f'<span class="badge {kind}" title="{markupsafe.escape(meaning)}">'
                   f"{markupsafe.escape(flag)}</span>")
    return markupsafe.Markup(" ".join(out))


def environment(html):
    """The template environment: autoescaping for HTML, strict about missing values."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=html, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = md_cell
    env.filters["inline"] = inline
    env.filters["badges"] = badges
    return env


def render(template, ctx):
    """``template`` (from templates/) rendered with ``ctx``; HTML when it ends in .html.j2."""
    return environment(template.endswith(".html.j2")).get_template(template).render(**ctx)
