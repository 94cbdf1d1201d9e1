"""An instance whose settings are missing or invalid: its one log line, and its refusal to start.

A SettingsError is the server's fault, never the caller's nor a message's. Every edge answers it 500
``invalid_settings`` in the error envelope (transports/http.py: ``failed``; the Pub/Sub edges too, so the
message is not acknowledged and Pub/Sub redelivers it: nothing is lost) and logs it here: one ERROR line
naming the variables, never their values (one could hold a secret), and no traceback (the problem is in
the environment, not in the code). When the settings that would have configured logging are what failed,
logging is configured here (JSON lines at INFO); an ERROR line passes any level FS_LOG_LEVEL allows.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from feature_store import logs
from feature_store.errors import SettingsError

log = logs.get_logger("feature_store.settings")

EXIT_SETTINGS = 2  # what a command line exits with on the same error (cli/runner.py)


def report(exc: SettingsError, level: int = logging.ERROR, **fields: Any) -> None:
    """One log line for ``exc``: its code, the variables and what is wrong with each (no value, no traceback),
    and the ``fields`` that are not None (a request id, a message id)."""
    logs.configure_default()
    log.log(level, exc.message, extra={"fields": {
        "error_code": exc.code, "variables": exc.variables, "problems": exc.problems,
        **{name: value for name, value in fields.items() if value is not None}}})


def answer(exc: SettingsError, **fields: Any) -> tuple[int, dict[str, Any]]:
    """``exc`` reported, and the status and body every edge answers it with (500 ``invalid_settings``)."""
    report(exc, **fields)
    return exc.status, {"error": exc.to_dict()}


def refuse_to_start(exc: SettingsError) -> NoReturn:
    """End the process loading a function: one CRITICAL line, then exit 2 without a traceback.

    SystemExit is not an Exception: functions-framework's loader lets it through, and the interpreter
    exits with its code and prints nothing more. Cloud Run then fails the deployment (the previous
    revision keeps serving) rather than start an instance that cannot serve.
    """
    report(exc, logging.CRITICAL, refused_to_start=True)
    raise SystemExit(EXIT_SETTINGS)
