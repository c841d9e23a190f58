"""Putting hostile text into pages: JSON inside <script> blocks, names inside URLs.

Model output reaches the site in three ways: as HTML text and attributes (jinja2 autoescape
escapes those), as JSON data that the tables' script reads, and through file names a results
folder chose. The last two are handled here. No Markdown is rendered anywhere: model output is
shown as preformatted text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from markupsafe import Markup

# Inside <script type="application/json"> the HTML parser ends the block at "</script" and
# treats "<!--" specially, whatever the JSON means; U+2028/2029 end lines in older JavaScript.
_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_UNSAFE = re.compile("[<>&\u2028\u2029]")


def script_json(value: Any) -> Markup:
    """JSON text that is safe as the body of a <script type="application/json"> element.

    Args:
        value: any JSON-serialisable value.

    Returns:
        The JSON with <, >, &, U+2028 and U+2029 written as \\u escapes (still the same JSON value),
        marked safe for jinja2 so autoescape leaves the escapes alone.
    """
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
    return Markup(_SCRIPT_UNSAFE.sub(lambda m: _SCRIPT_ESCAPES[m.group(0)], text))


_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(name: str) -> str:
    """A file name made only of [A-Za-z0-9._-], never empty, never starting with a dot."""
    cleaned = _SLUG_UNSAFE.sub("-", name).strip("-.")
    return cleaned[:80] or "run"


def unique_slugs(names: list[str]) -> list[str]:
    """Slugs for names, made distinct with a numeric suffix where two names clean to the same one."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        base = slug(name)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.append(base if count == 0 else f"{base}-{count + 1}")
    return out
