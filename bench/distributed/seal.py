"""Authenticated messages between a master and its workers: the shared token, its fingerprint,
and the HMAC-SHA256 envelope (session nonce + counter) that every bench message travels in.

A message's ``data`` on the wire is ``{"s": SESSION, "n": COUNTER, "body": JSON, "mac": HEX}``
with ``mac = HMAC-SHA256(token, [SESSION, SENDER, RECIPIENT, COUNTER, TYPE, BODY])``. The
session starts as the master's run nonce (fresh per run, sent in its challenge) and becomes
``RUN.WORKER_NONCE`` once the worker's hello (which carries a fresh nonce of its own) passed,
so a message recorded in an earlier run, for another worker, or replayed within the run (its
counter not above the last one accepted) is dropped, as is anything altered or sealed with
another token. Without a token the key is empty: messages still carry session and counter
(replays and other runs are still told apart) but anyone can seal them.
"""
import hashlib
import hmac
import json
import os
import re

from bench.errors import UsageError

ENV = "BENCH_CLUSTER_TOKEN"
MIN_TOKEN_CHARS = 16
MAC = re.compile(r"[0-9a-f]{64}")


def load_token(path):
    """The token from ``--cluster-token-file`` (``path``) or ``BENCH_CLUSTER_TOKEN``, or None.

    The variable leaves this process's environment once read, so the servers and drivers the
    harness spawns never inherit it; the engine is handed the token explicitly."""
    from_env = os.environ.pop(ENV, "").strip()
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token, origin = f.read().strip(), f"--cluster-token-file {path}"
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--cluster-token-file: cannot read {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    else:
        token, origin = from_env, ENV
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS or "\n" in token:
        raise UsageError(f"{origin}: the cluster token must be one line of at least "
                         f"{MIN_TOKEN_CHARS} characters (e.g. python -c 'import secrets; "
                         "print(secrets.token_hex(32))' > FILE)")
    return token


def fingerprint(token):
    """First 12 hex digits of the token's SHA-256: names a token in logs and meta.json."""
    return hashlib.sha256(token.encode()).hexdigest()[:12] if token else None


def _mac(key, session, sender, recipient, n, kind, body):
    text = json.dumps([session, sender, recipient, n, kind, body], separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class Channel:
    """One end of one master-worker link: seals what it sends, opens what it receives."""

    def __init__(self, token, session, me, peer):
        self.key = (token or "").encode()
        self.session = session  # None on a worker until the master's challenge names it
        self.me, self.peer = me, peer
        self.sent = self.seen = 0

    def seal(self, kind, payload):
        """The envelope of ``payload`` as message type ``kind``, under the next counter."""
        self.sent += 1
        body = json.dumps(payload, separators=(",", ":"))
        return dict(s=self.session, n=self.sent, body=body,
                    mac=_mac(self.key, self.session, self.me, self.peer, self.sent, kind, body))

    def open(self, kind, data):
        """(payload, None) for a message that passes; (None, reason) for one to drop."""
        try:
            session, n, body, mac = data["s"], data["n"], data["body"], data["mac"]
            valid = isinstance(n, int) and isinstance(body, str) and isinstance(mac, str) \
                and isinstance(session, (str, type(None))) and MAC.fullmatch(mac) is not None
        except (TypeError, KeyError):
            valid = False
        if not valid:
            return None, "unsigned"
        try:
            expected = _mac(self.key, session, self.peer, self.me, n, kind, body)
        except (TypeError, ValueError):  # e.g. a body with lone surrogates, an unnamed type
            return None, "unsigned"
        if not hmac.compare_digest(mac, expected):
            return None, "bad-mac"
        if self.session is None:
            self.session = session  # the challenge: it names the master's run
        elif session != self.session:
            return None, "other-session"
        if n <= self.seen:
            return None, "replayed"
        self.seen = n
        try:
            return json.loads(body), None
        except ValueError:  # sealed by a peer holding the token, yet not JSON
            return None, "unsigned"

    def bind(self, worker_nonce):
        """From the worker's hello on, both directions are bound to its own nonce as well."""
        self.session = f"{self.session}.{worker_nonce}"


def claims(data):
    """What an envelope that failed the check says about its sender (unverified, for logs)."""
    try:
        body = json.loads(data["body"])
    except (TypeError, KeyError, ValueError):
        return {}
    return {k: body[k] for k in ("host", "pid", "token_fingerprint")
            if isinstance(body, dict) and k in body}
