"""The error of an invalid config, and pydantic's errors as one message naming source and keys.

Every layer of configuration (config file, grid, profile, data override, resources) raises
`ConfigError`; `diffseg3d ablate` and `diffseg3d train` print it as one line and exit 2.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config (file, profile or override) is invalid; the message names source, key and value."""


def format_errors(errors: list[dict], source: str) -> str:
    """pydantic `errors` as one message naming `source` and each dotted key with its value."""
    lines = []
    for e in errors:
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (value {value!r})")
        elif isinstance(value, dict):
            # A section-level (cross-field) check: its message names the keys and values.
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {msg}" if not e["loc"] else f"  - {key}: {msg}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}: {msg} (got {value!r})")
    return f"{source}: invalid config:\n" + "\n".join(lines)
