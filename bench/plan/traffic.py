"""The user's own traffic (``--scenario-file PATH``): parse and strictly validate the TOML.

The format is fixed in docs/DESIGN.md ("The user's own traffic"); keys may be added, never renamed:

    namespace = "/"                        # optional
    [connect]                              # optional: auth payload, URL query, HTTP headers
    auth = { token = "t" }
    query = { room = "lobby" }
    headers = { "X-Client" = "bench" }
    [[setup]]                              # once per connection after connecting, ack awaited
    event = "join"
    args = [{ room = "lobby" }]
    [[messages]]                           # the measured traffic; weights pick the mix
    event = "send_message"
    args = [{ text = "hi" }]               # a string "{pad:N}" becomes N bytes
    reply = "ack"                          # "ack", or "event:NAME" (the server emits NAME back)
    weight = 3

``"{seq}"`` anywhere in a message's ``args`` (a whole string or inside one) becomes the
message's unique id, the string ``seq-C-K`` (connection index C, message number K); an
``event:NAME`` reply is then matched to the message whose id its payload carries (see
bench/driver/custom.py). Setup events take no ``{seq}``: they are not measured. Without
``[connect] auth`` the CONNECT packet carries no auth payload at all.

Every error is one line naming the file, the line and the key (a TOML syntax error carries its
own line; for the rest the key's line is found in the text).
"""
import os
import re
import tomllib

from bench.errors import UsageError

TOP = {"namespace", "connect", "setup", "messages"}
CONNECT = {"auth", "query", "headers"}
SETUP = {"event", "args"}
MESSAGE = {"event", "args", "reply", "weight"}
RESERVED = {"connect", "connect_error", "disconnect"}
PAD = re.compile(r"\{pad:(\d+)\}")
SEQ = "{seq}"
MAX_PAD = 1_000_000


def _header(line):
    m = re.match(r"\s*(\[\[?)\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?", line)
    return (m.group(2), m.group(1) == "[[") if m else None


def line_of(text, section=None, index=None, key=None):
    """1-based line where ``key`` is set in ``[section]`` / the ``index``-th ``[[section]]``
    (or where that table starts when ``key`` is None); 0 when not found."""
    current, seen = None, {}
    start = 0
    for n, line in enumerate(text.splitlines(), 1):
        header = _header(line) if line.lstrip().startswith("[") else None
        if header:
            name, array = header
            seen[name] = seen.get(name, -1) + 1 if array else 0
            current = (name, seen[name])
            if current == (section, index or 0) and key is None:
                return n
            if current == (section, index or 0):
                start = n
            continue
        here = (current is None and section is None) or current == (section, index or 0)
        if here and key and re.match(rf"\s*\"?{re.escape(key)}\"?\s*=", line):
            return n
    return start


class _Checker:
    def __init__(self, path, text):
        self.path, self.text = path, text

    def fail(self, what, message, section=None, index=None, key=None):
        line = line_of(self.text, section, index, key)
        where = f", line {line}" if line else ""
        raise UsageError(f"scenario file {os.path.basename(self.path)}{where}: {what}: {message}")

    def table(self, data, allowed, name, section=None, index=None):
        for key in data:
            if key not in allowed:
                self.fail(f"{name}.{key}" if name else key,
                          f"unknown key (allowed: {', '.join(sorted(allowed))})",
                          section, index, key)


def _pads(value):
    """The "{pad:N}" sizes inside ``value``."""
    if isinstance(value, str):
        return [int(n) for n in PAD.findall(value)]
    if isinstance(value, list):
        return [p for v in value for p in _pads(v)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _pads(v)]
    return []


def has_seq(value):
    """True when the string "{seq}" occurs anywhere inside ``value``."""
    if isinstance(value, str):
        return SEQ in value
    if isinstance(value, list):
        return any(has_seq(v) for v in value)
    if isinstance(value, dict):
        return any(has_seq(k) or has_seq(v) for k, v in value.items())
    return False


def expand(value, pad=None):
    """``value`` with every "{pad:N}" replaced by N bytes (or by ``pad`` bytes when given)."""
    if isinstance(value, str):
        return PAD.sub(lambda m: "x" * (int(m.group(1)) if pad is None else int(pad)), value)
    if isinstance(value, list):
        return [expand(v, pad) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, pad) for k, v in value.items()}
    return value


def _plain(value):
    """TOML values as JSON values (dates become strings)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def load(path):
    """The traffic of ``path`` as a plain dict (what the Job carries); UsageError otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise UsageError(f"--scenario-file: cannot read {path}: {exc.strerror}") from None
    text = raw.decode("utf-8", "replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc).replace("(at end of document)",
                                   f"(at end of document, line {text.count(chr(10)) + 1})")
        raise UsageError(f"scenario file {os.path.basename(path)}: {message}") from None
    return validate(data, path, text)


def validate(data, path="scenario.toml", text=""):
    c = _Checker(path, text)
    c.table(data, TOP, "")
    namespace = data.get("namespace", "/")
    if not isinstance(namespace, str) or not namespace.startswith("/") or "," in namespace \
            or " " in namespace:
        c.fail("namespace", f"must be a string like \"/\" or \"/chat\", got {namespace!r}",
               key="namespace")
    connect = data.get("connect", {})
    if not isinstance(connect, dict):
        c.fail("connect", "must be a table [connect]", key="connect")
    c.table(connect, CONNECT, "connect", "connect")
    for key in ("query", "headers"):
        value = connect.get(key, {})
        if not isinstance(value, dict) or not all(
                isinstance(v, (str, int, float, bool)) for v in value.values()):
            c.fail(f"connect.{key}", "must be a table of strings or numbers", "connect",
                   key=key)
    if "auth" in connect and not isinstance(connect["auth"], dict):
        c.fail("connect.auth", "must be a table (the Socket.IO auth payload)", "connect",
               key="auth")
    for key in sorted(CONNECT):
        if has_seq(connect.get(key)):
            c.fail(f"connect.{key}", "\"{seq}\" belongs in [[messages]] only (the connection "
                   "is not a measured message, so there is no message id to give)", "connect",
                   key=key)
    setup = data.get("setup", [])
    messages = data.get("messages", [])
    for name, items in (("setup", setup), ("messages", messages)):
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            c.fail(name, f"must be an array of tables [[{name}]]", key=name)
    if not messages:
        c.fail("messages", "at least one [[messages]] table is needed (the measured traffic)")
    out_setup, out_messages = [], []
    for section, items, allowed in (("setup", setup, SETUP), ("messages", messages, MESSAGE)):
        for i, item in enumerate(items):
            what = f"{section}[{i + 1}]"
            c.table(item, allowed, what, section, i)
            event = item.get("event")
            if not isinstance(event, str) or not event:
                c.fail(f"{what}.event", "missing or not a string", section, i,
                       "event" if "event" in item else None)
            if event in RESERVED:
                c.fail(f"{what}.event", f"{event!r} is reserved by Socket.IO", section, i,
                       "event")
            args = item.get("args", [])
            if not isinstance(args, list):
                c.fail(f"{what}.args", "must be an array (the event's arguments)", section,
                       i, "args")
            if any(n > MAX_PAD for n in _pads(args)):
                c.fail(f"{what}.args", f"a {{pad:N}} above {MAX_PAD} bytes", section, i,
                       "args")
            if section == "setup" and has_seq(args):
                c.fail(f"{what}.args", "\"{seq}\" belongs in [[messages]] only (setup events "
                       "are not measured, so there is no message id to give)", section, i,
                       "args")
            record = dict(event=event, args=_plain(args))
            if section == "messages":
                reply = item.get("reply", "ack")
                if not isinstance(reply, str) or not (
                        reply == "ack" or (reply.startswith("event:") and len(reply) > 6)):
                    c.fail(f"{what}.reply", f"unknown reply kind {reply!r} (\"ack\" or "
                           "\"event:NAME\")", section, i, "reply")
                weight = item.get("weight", 1)
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
                        not 0 < weight <= 1e6:
                    c.fail(f"{what}.weight", f"must be a positive number, got {weight!r}",
                           section, i, "weight")
                record.update(reply=reply, weight=float(weight))
            (out_setup if section == "setup" else out_messages).append(record)
    auth = _plain(connect["auth"]) if "auth" in connect else None  # no key: no auth payload
    return dict(namespace=namespace, auth=auth,
                query={k: str(v) for k, v in connect.get("query", {}).items()},
                headers={k: str(v) for k, v in connect.get("headers", {}).items()},
                setup=out_setup, messages=out_messages)


def events(traffic):
    """Every event the traffic sends (setup first), for checking against an app's handlers."""
    return list(dict.fromkeys([s["event"] for s in traffic["setup"]] +
                              [m["event"] for m in traffic["messages"]]))


def has_pad(traffic):
    return any(_pads(m["args"]) for m in traffic["messages"])
