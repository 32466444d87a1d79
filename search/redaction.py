"""Credentials out of everything blendprune prints or sends to MLflow."""

from __future__ import annotations

import re

__all__ = ["redact"]

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*)"
                       r"(?P<password>:[^/@\s]*)?@")


def redact(text: str) -> str:
    """`text` with the secret of every `scheme://user:password@host` (or the lone token of
    `scheme://token@host`) replaced by ***.

    Applied to everything blendprune prints or sends to MLflow (params, config.yaml,
    warnings), so credentials in a tracking or data URI never reach a log or a run.
    """
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m["password"]
                         else f"{m['scheme']}***@", text)
