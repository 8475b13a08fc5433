"""Store URLs, the same way for every store: reading their options, showing them safely."""

from __future__ import annotations

import re
from urllib.parse import urlsplit


def parse_bool(store: str, name: str, text: str) -> bool:
    """``text``, the value of the URL option ``name`` of a ``store`` store URL, as a boolean:
    ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, any case. Raises
    ``ValueError`` naming the store, the option and the value for anything else."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{store} store URL option {name}={text!r} is not a boolean")


#: Query options that carry a credential in some store's URL (libSQL's ``authToken``, the
#: Upstash driver's ``token``).
_SECRET_OPTIONS = re.compile(r"([?&](?:authtoken|token|password)=)[^&#]*", re.IGNORECASE)


def masked(url: str) -> str:
    """``url`` for error messages, logs and reprs: a password in it and the values of the
    ``authToken``, ``token`` and ``password`` options replaced by ``***``; otherwise unchanged
    (``sqlite:///x`` stays ``sqlite:///x``)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return "<a store URL>"
    if password:
        url = url.replace(f":{password}@", ":***@", 1)
    return _SECRET_OPTIONS.sub(r"\1***", url)
