"""The errors of an invalid config or grid file, and pydantic's errors as one message naming
source and keys.

Every layer of configuration (config file, profile, data override, resources) raises
`ConfigError`, a grid file `GridError`; the command line prints either as one line and exits 2.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config (file, profile or override) is invalid; the message names source, key and value."""


class GridError(ValueError):
    """A grid file is malformed or expands into inconsistent trials; names file and key."""


def format_errors(errors: list[dict], source: str) -> str:
    """pydantic `errors` as one message naming `source` and each dotted key with its value."""
    lines = []
    for e in errors:
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (value {value!r})")
        elif e["type"] == "finite_number":  # `Section`'s allow_inf_nan=False
            lines.append(f"  - {key}: must be a finite number, not NaN or infinity "
                         f"(got {value!r})")
        elif isinstance(value, dict):
            # A section-level (cross-field) check: its message names the keys and values.
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {msg}" if not e["loc"] else f"  - {key}: {msg}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}: {msg} (got {value!r})")
    return f"{source}: invalid config:\n" + "\n".join(lines)
