"""Reports as strict JSON: a non-finite number is written `null`, never `NaN`/`Infinity`.

Standard library only. A run whose numbers stop being finite says so in its `status`
field; the file itself stays valid JSON for every reader.
"""

import json
import math


def json_ready(obj):
    """`obj` with every non-finite float replaced by `None` (tuples become lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    return obj


def write_json(path: str, obj) -> None:
    with open(path, "w") as fh:
        json.dump(json_ready(obj), fh, indent=2, ensure_ascii=False, allow_nan=False)


def number(x: float, spec: str, width: int) -> str:
    """`format(x, spec)` right-aligned in `width`; a non-finite value as `—` (no value)."""
    return f"{x:{width}{spec}}" if math.isfinite(x) else f"{'—':>{width}}"
