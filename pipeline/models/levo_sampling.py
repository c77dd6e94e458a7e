"""How the round's `sampling` section reaches SongGeneration's generate.py (the `levo` backend).

Upstream generate.py hard-codes its sampling (`UPSTREAM_SAMPLING`: cfg_coef 1.5, temperature
0.9, top_k 50, top_p 0.0). The adapter sends the round's values in LeVo's own terms two ways:
- `$SONGPREF_SAMPLING` (`LevoOptions.sampling_env`), a JSON object, read by a generate.py patched
  as `UPSTREAM_SAMPLING_PATCH` shows (it replaces the four hard-coded lines and writes the values
  it used to `<save_dir>/songpref_sampling.json`, which the adapter checks after every call);
- the command placeholders {temperature}, {top_k}, {top_p}, {cfg_coef}, for a version that
  takes them as flags.
A value that differs from upstream's and reaches generate.py by neither way is refused before
any song is sampled, naming the value: the songs would otherwise be sampled with another one.

LeVo's sampler (audiocraft-style) uses top_p when it is above 0, else top_k when above 0, else
the full distribution. So songpref's `top_p: 1` (off) is LeVo's 0.0, `top_k: 0` is off in both,
`cfg_coef: null` is upstream's 1.5, and top_k together with top_p is refused (LeVo would drop top_k).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.models.base import SamplingParams

UPSTREAM_SAMPLING = {"cfg_coef": 1.5, "temperature": 0.9, "top_k": 50, "top_p": 0.0}
SAMPLING_PLACEHOLDERS = tuple(UPSTREAM_SAMPLING)
SAMPLING_MARKER = "songpref_sampling.json"
UPSTREAM_SAMPLING_PATCH = (
    '_songpref_sampling = {"cfg_coef": 1.5, "temperature": 0.9, "top_k": 50, "top_p": 0.0, '
    '**json.loads(os.environ.get("SONGPREF_SAMPLING", "{}"))}\n'
    'cfg_coef, temp = float(_songpref_sampling["cfg_coef"]), float(_songpref_sampling["temperature"])\n'
    'top_k, top_p = int(_songpref_sampling["top_k"]), float(_songpref_sampling["top_p"])\n'
    'if "SONGPREF_SAMPLING" in os.environ: os.makedirs(save_dir, exist_ok=True); '
    'open(os.path.join(save_dir, "songpref_sampling.json"), "w").write(json.dumps(_songpref_sampling))\n'
)


class LevoSamplingError(ValueError):
    """A sampling value the `levo` backend cannot take; the message names it."""


def levo_sampling(params: SamplingParams) -> dict:
    """The round's sampling in LeVo's terms (the JSON sent to generate.py)."""
    if params.top_k > 0 and params.top_p < 1:
        raise LevoSamplingError(f"sampling.top_k {params.top_k} with sampling.top_p {params.top_p:g}: LeVo samples with "
                                "top_p alone when it is set and would ignore top_k; set top_k: 0 or top_p: 1")  # fmt: skip
    return {
        "cfg_coef": float(UPSTREAM_SAMPLING["cfg_coef"] if params.cfg_coef is None else params.cfg_coef),
        "temperature": float(params.temperature),
        "top_k": int(params.top_k),
        "top_p": 0.0 if params.top_p >= 1 else float(params.top_p),
    }


def forwarded_keys(script: Path, env_name: str, command: list[str]) -> dict[str, str]:
    """Each sampling key that reaches generate.py, and how ("$ENV" when the script reads the
    variable, "{key}" when the command carries the placeholder)."""
    try:
        patched = env_name in script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        patched = False
    joined = " ".join(command)
    out = {}
    for key in SAMPLING_PLACEHOLDERS:
        if "{" + key + "}" in joined:
            out[key] = "{" + key + "}"
        elif patched:
            out[key] = "$" + env_name
    return out


def refuse_unforwarded(values: dict, forwarded: dict[str, str], script: Path, env_name: str) -> None:
    """LevoSamplingError naming every value that differs from upstream's and cannot reach generate.py."""
    lost = [key for key, value in values.items() if value != UPSTREAM_SAMPLING[key] and key not in forwarded]
    if lost:
        named = ", ".join(f"sampling.{key} {values[key]:g} (the script's: {UPSTREAM_SAMPLING[key]:g})" for key in lost)
        raise LevoSamplingError(
            f"{named}: {script} hard-codes its sampling and reads no ${env_name}; apply "
            "pipeline.models.levo_sampling.UPSTREAM_SAMPLING_PATCH to it, put the placeholders "
            f"{{{'}, {'.join(lost)}}} in levo.command, or set these to upstream's values"
        )


def marker_matches(save_dir: Path, values: dict) -> bool:
    """Whether the patched generate.py wrote the sampling it used, equal to what it was sent."""
    try:
        return json.loads((save_dir / SAMPLING_MARKER).read_text()) == values
    except (OSError, ValueError):
        return False
