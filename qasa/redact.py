"""Keep Leap API tokens out of everything qasa writes or prints.

A token can reach a message in many ways: a server that echoes it in an error, an exception raised
deep inside dwave-cloud-client, a log record, a traceback. qasa never reads a token into its own
records, and everything it stores or prints from outside (error messages, failure records, server
timing, solver properties) goes through :func:`redact`, which replaces every token that
dwave-cloud-client could use:

- the ``token`` of every profile (the ``defaults`` section included) of every configuration file
  dwave-cloud-client would read (system, user and local ``dwave.conf``, and ``DWAVE_CONFIG_FILE``);
- the ``DWAVE_API_TOKEN`` environment variable;
- the token of the profile in use (``load_config(profile=...)``);
- tokens registered at run time (:func:`register`), e.g. the one a ``DWaveSampler`` was built with.

The command line also installs :func:`redacting_streams` (stdout and stderr pass through
:func:`redact`), a redacting ``sys.excepthook`` and a log filter, so that tracebacks and log output
are covered too. They are installed *before* the first token is looked up: dwave-cloud-client's
``load_config`` logs the whole configuration, token included, at ``DWAVE_LOG_LEVEL=TRACE``, so the
tokens of the configuration files and the environment (read without it) are known to the filter
first. qasa's own calls of ``load_config`` are made with its logger silenced, so a library user's
TRACE log shows no token qasa looked up either.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from typing import Any, Iterator

__all__ = ["tokens", "redact", "redact_obj", "register", "redacting_streams", "REPLACEMENT"]

#: What a token is replaced with.
REPLACEMENT = "<token>"

_registered: set[str] = set()
#: The token sets of the redacting streams in use (a token registered later is added to each).
_live: list[set[str]] = []
#: Shortest string treated as a token (guards against replacing an empty or one-letter value).
_MIN_LENGTH = 4


def register(token: str | None) -> None:
    """Also redact ``token`` from now on (e.g. the token a sampler was built with)."""
    if token and len(str(token)) >= _MIN_LENGTH:
        _registered.add(str(token))
        for live in _live:
            live.add(str(token))


def _config_files() -> list[str]:
    from dwave.cloud.config import get_configfile_paths

    files = list(get_configfile_paths())
    extra = os.environ.get("DWAVE_CONFIG_FILE")
    if extra:
        files.append(os.path.expandvars(os.path.expanduser(extra)))
    return files


@contextlib.contextmanager
def _silenced(name: str) -> Iterator[None]:
    """Within the block, the logger ``name`` (and its children) emits nothing."""
    logger = logging.getLogger(name)
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def tokens(profile: str | None = None) -> set[str]:
    """Every token dwave-cloud-client could use (see module docstring)."""
    found = _known_tokens()
    try:
        from dwave.cloud.config import load_config

        with _silenced("dwave.cloud.config.loaders"):
            value = load_config(profile=profile).get("token")
        if value:
            found.add(value)
    except Exception:
        pass
    return {t for t in found if t and len(t) >= _MIN_LENGTH}


def _known_tokens() -> set[str]:
    """The registered tokens, ``DWAVE_API_TOKEN`` and the tokens of every configuration file
    (read without dwave-cloud-client's ``load_config``, which logs them)."""
    found = set(_registered)
    env = os.environ.get("DWAVE_API_TOKEN")
    if env:
        found.add(env)
    try:
        import configparser

        for path in _config_files():
            parser = configparser.RawConfigParser(default_section="defaults")
            try:
                parser.read(path)
            except (configparser.Error, OSError, UnicodeDecodeError):
                # unparsable: redact every value that looks like a token line
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    for line in open(path, encoding="utf-8", errors="replace"):
                        key, sep, value = line.partition("=")
                        if sep and key.strip().lower() == "token":
                            found.add(value.strip())
                continue
            for section in [parser.default_section, *parser.sections()]:
                value = parser.get(section, "token", fallback=None) if section != parser.default_section \
                    else parser.defaults().get("token")
                if value:
                    found.add(value.strip())
    except Exception:  # pragma: no cover - a broken homebase install must not break redaction
        pass
    return {t for t in found if t and len(t) >= _MIN_LENGTH}


def redact(text: Any, secrets: set[str] | None = None) -> str:
    """``text`` (made a string) with every token replaced by :data:`REPLACEMENT`."""
    text = str(text)
    for token in sorted(tokens() if secrets is None else secrets, key=len, reverse=True):
        if token in text:
            text = text.replace(token, REPLACEMENT)
    return text


def redact_obj(obj: Any, secrets: set[str] | None = None) -> Any:
    """A JSON-able object with every token removed from its strings (keys included)."""
    secrets = tokens() if secrets is None else secrets
    if not secrets:
        return obj
    text = json.dumps(obj, default=str)
    if not any(t in text for t in secrets):
        return obj
    return json.loads(redact(text, secrets))


class _RedactingStream(io.TextIOBase):
    """A text stream that redacts whatever is written through it (line-buffered, so that a token
    split over two writes is still caught)."""

    def __init__(self, stream, secrets: set[str]) -> None:
        self._stream = stream
        self._secrets = secrets
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending or "\r" in self._pending:
            cut = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
            out, self._pending = self._pending[:cut], self._pending[cut:]
            self._stream.write(redact(out, self._secrets))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending, self._secrets))
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", "strict")

    def writable(self) -> bool:
        return True


class _RedactingFilter(logging.Filter):
    def __init__(self, secrets: set[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = redact(message, self.secrets), ()
        if record.exc_info:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"),
                                     self.secrets)
            record.exc_info = None
        return True


@contextlib.contextmanager
def redacting_streams(profile: str | None = None) -> Iterator[set[str]]:
    """Within the block, stdout, stderr, tracebacks (``sys.excepthook``) and log records are redacted.

    Yields the set of tokens being redacted (tokens registered inside the block are added to it).
    The streams and the log filter are in place before any token is looked up (see module docstring).
    """
    secrets: set[str] = set()
    out, err, hook = sys.stdout, sys.stderr, sys.excepthook
    log_filter = _RedactingFilter(secrets)

    def excepthook(kind, value, tb):
        import traceback

        sys.__stderr__.write(redact("".join(traceback.format_exception(kind, value, tb)), secrets | tokens(profile)))

    sys.stdout, sys.stderr = _RedactingStream(out, secrets), _RedactingStream(err, secrets)
    sys.excepthook = excepthook
    _live.append(secrets)
    with contextlib.suppress(ImportError):   # its log handler (DWAVE_LOG_LEVEL) is made now, if not before
        import dwave.cloud  # noqa: F401
    handlers = [h for h in logging.root.handlers + logging.getLogger("dwave.cloud").handlers]
    for h in handlers:
        h.addFilter(log_filter)
    secrets.update(_known_tokens())         # known to the filter before load_config logs them
    secrets.update(tokens(profile))
    try:
        yield secrets
    finally:
        with contextlib.suppress(ValueError):
            _live.remove(secrets)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        sys.stdout, sys.stderr, sys.excepthook = out, err, hook
        for h in handlers:
            h.removeFilter(log_filter)
