"""LeVo / SongGeneration (tencent-ailab/SongGeneration) as a SongModel, driven through its CLI.

Upstream contract: ``python generate.py <ckpt_dir> <input.jsonl> <save_dir> [gen_type]`` reads
jsonl records (idx, gt_lyric, descriptions and exactly one of prompt_audio_path /
auto_prompt_audio_type) and writes ``<save_dir>/audios/<idx>.flac`` (48 kHz), with separated
stems ``<idx>_vocal.flac`` / ``<idx>_bgm.flac`` where the version and flags produce them, plus
``<save_dir>/jsonl/<input name>.jsonl``. The command line is a template
(`LevoOptions.command`) so newer flag-style versions (``--separate``, low-memory variants)
fit too.

Each candidate becomes its own record with ``idx = candidate_id`` (built by
`pipeline.conditions.to_levo_record`, which enforces the prompt XOR). The subprocess runs
once per distinct seed (with ``batch_same_seed``; otherwise once per candidate), with
``$SONGPREF_SEED`` (`LevoOptions.seed_env`) and ``PYTHONHASHSEED`` set to that seed. Outputs
are moved to ``out_dir/<candidate_id>/mix.flac`` and, with ``separate_stems``,
``vocals.flac`` and ``accompaniment.flac``. A failure (non-zero exit, timeout, missing or
unreadable output) is recorded on each candidate it touches, with the tail of stderr; the
other groups still run. A non-zero exit or timeout fails every candidate of that call, since
a killed run may leave a half-written file.

Seeds. Upstream generate.py seeds numpy with ``int(time.time())`` and never seeds torch, so
seeds are *recorded but not reproducible* with an unpatched checkout. To honour them,
replace its ``np.random.seed(int(time.time()))`` line with (see `UPSTREAM_SEED_PATCH`)::

    _songpref_seed = int(os.environ.get("SONGPREF_SEED", int(time.time())))
    np.random.seed(_songpref_seed % 2**32); torch.manual_seed(_songpref_seed)
    if "SONGPREF_SEED" in os.environ: os.makedirs(sys.argv[3], exist_ok=True); open(os.path.join(sys.argv[3], "songpref_seed.txt"), "w").write(str(_songpref_seed))

The third line writes the marker ``<save_dir>/songpref_seed.txt`` that this adapter checks
after every run: `describe()["seed_honoured"]` is True only when every run so far wrote it
with the seed it was given (None before any run). ``seed_patch_present`` is a static check
that generate.py mentions the seed variable. Even patched, GPU kernels may be
non-deterministic, so equal seeds give equal songs only as far as the hardware allows.

Sampling. Upstream hard-codes cfg_coef 1.5, temperature 0.9, top_k 50, top_p 0; the round's
values are forwarded (``$SONGPREF_SAMPLING`` for a generate.py patched as
`levo_sampling.UPSTREAM_SAMPLING_PATCH` shows, or command placeholders), and a value that cannot
reach generate.py is refused by name before any song is sampled (pipeline/models/levo_sampling.py).

Checkpoints. `checkpoint_option` is ``checkpoint_dir``: the sweep and a parent round sample
from another folder by setting it, and `sample` refuses a folder that is not a SongGeneration
checkpoint (no config.yaml), e.g. Hugging Face weights merged from a `dpo.policy`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import soundfile
from pydantic import BaseModel, ConfigDict, Field

from pipeline.conditions import to_levo_record
from pipeline.models.base import CandidateRequest, CandidateResult, SamplingParams
from pipeline.models.levo_process import git_head, run_generate
from pipeline.models.levo_sampling import (
    SAMPLING_PLACEHOLDERS,
    UPSTREAM_SAMPLING,
    forwarded_keys,
    levo_sampling,
    marker_matches,
    refuse_unforwarded,
)

SEED_MARKER = "songpref_seed.txt"
CHECKPOINT_FILES = ("config.yaml",)  # every generate.py version reads its model config from here
UPSTREAM_SEED_PATCH = (
    '_songpref_seed = int(os.environ.get("SONGPREF_SEED", int(time.time())))\n'
    "np.random.seed(_songpref_seed % 2**32); torch.manual_seed(_songpref_seed)\n"
    'if "SONGPREF_SEED" in os.environ: os.makedirs(sys.argv[3], exist_ok=True); '
    'open(os.path.join(sys.argv[3], "songpref_seed.txt"), "w").write(str(_songpref_seed))\n'
)
PLACEHOLDERS = ("python", "checkpoint_dir", "input_jsonl", "save_dir", *SAMPLING_PLACEHOLDERS)
# upstream output suffix -> our stem name
STEM_FILES = {"": "mix", "_vocal": "vocals", "_bgm": "accompaniment"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class LevoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_dir: Path = Field(description="The SongGeneration checkout; the command runs with this as its working directory.")
    checkpoint_dir: Path = Field(description="Checkpoint folder passed as generate.py's first argument (config.yaml, model.pt).")
    python: str = Field("python", description="Interpreter that has SongGeneration's dependencies; fills {python}.")
    command: list[str] = Field(
        default_factory=lambda: ["{python}", "generate.py", "{checkpoint_dir}", "{input_jsonl}", "{save_dir}"],
        description="Command template; {python}, {checkpoint_dir}, {input_jsonl}, {save_dir} and the sampling values "
        "{temperature}, {top_k}, {top_p}, {cfg_coef} (LeVo's terms) are filled in. Append extra arguments (gen_type, "
        "--separate, low-memory flags) as the checkout expects.",
    )
    separate_stems: bool = Field(
        True, description="Expect <idx>_vocal.flac and <idx>_bgm.flac next to the mix; a missing stem fails the candidate."
    )
    seed_env: str = Field("SONGPREF_SEED", description="Environment variable carrying the candidate's seed to a patched generate.py.")
    sampling_env: str = Field(
        "SONGPREF_SAMPLING", description="Environment variable carrying the sampling values (JSON) to a patched generate.py."
    )
    batch_same_seed: bool = Field(True, description="One subprocess call for all candidates sharing a seed (else one per candidate).")
    timeout_s: float = Field(3600, gt=0, description="Wall-clock limit of one subprocess call, in seconds.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the subprocess (e.g. CUDA_VISIBLE_DEVICES).")


class LevoError(RuntimeError):
    pass


class LevoSongModel:
    """Runs SongGeneration's generate.py per seed group; see the module docstring."""

    name = "levo"
    options_class = LevoOptions
    checkpoint_option = "checkpoint_dir"  # the key the sweep and a parent round point at other weights

    def __init__(self, options: LevoOptions) -> None:
        self.options = options
        repo = Path(options.repo_dir)
        if not repo.is_dir():
            raise LevoError(f"levo.repo_dir: {repo} is not a directory (expected a SongGeneration checkout)")
        self._script = repo / "generate.py"
        if not self._script.is_file():
            raise LevoError(f"levo.repo_dir: {self._script} not found (expected SongGeneration's generate.py)")
        if not options.command:
            raise LevoError("levo.command is empty")
        try:
            self._fill(Path("in.jsonl"), Path("save"), UPSTREAM_SAMPLING)
        except (KeyError, IndexError, ValueError) as exc:
            raise LevoError(f"levo.command: bad placeholder {exc} in {options.command}; allowed: {PLACEHOLDERS}") from None
        self._seed_runs: list[bool] = []
        self._fingerprint: str | None = None

    # -- description -------------------------------------------------------------------

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "repo_dir": str(self.options.repo_dir),
            "repo_commit": git_head(Path(self.options.repo_dir)),
            "checkpoint_dir": str(self.options.checkpoint_dir),
            "checkpoint_fingerprint": self._checkpoint_fingerprint(),
            "options": self.options.model_dump(mode="json"),
            "sampling": {"forwarded": self._forwarded(), "upstream_hard_coded": UPSTREAM_SAMPLING},
            "seed_patch_present": self._seed_patch_present(),
            "seed_honoured": (all(self._seed_runs) if self._seed_runs else None),
        }

    def _forwarded(self) -> dict[str, str]:
        return forwarded_keys(self._script, self.options.sampling_env, self.options.command)

    def check_sampling(self, params: SamplingParams) -> dict:
        """The values generate.py gets, in LeVo's terms; LevoSamplingError naming one it cannot take."""
        values = levo_sampling(params)
        refuse_unforwarded(values, self._forwarded(), self._script, self.options.sampling_env)
        return values

    def _check_checkpoint(self) -> None:
        folder = Path(self.options.checkpoint_dir)
        missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
        if missing:
            raise LevoError(f"levo.checkpoint_dir: {folder} has no {', '.join(missing)}: not a SongGeneration checkpoint "
                            "(merged or DPO weights reach LeVo only through a trainable-policy plugin that saves them in "
                            "LeVo's format)")  # fmt: skip

    def _seed_patch_present(self) -> bool:
        try:
            return self.options.seed_env in self._script.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    def _checkpoint_fingerprint(self) -> str | None:
        """sha256 over (name, size, mtime) of every file plus the full bytes of small ones (config);
        hashing multi-GB weights on every describe() would be too slow."""
        if self._fingerprint is None:
            root = Path(self.options.checkpoint_dir)
            if not root.is_dir():
                return None
            h = hashlib.sha256()
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                stat = path.stat()
                h.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                if stat.st_size <= 1 << 20:
                    h.update(path.read_bytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # -- sampling ------------------------------------------------------------------------

    def sample(self, requests: list[CandidateRequest], params: SamplingParams, out_dir: Path) -> list[CandidateResult]:
        sampling = self.check_sampling(params)
        self._check_checkpoint()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        results: dict[str, CandidateResult] = {}
        groups: OrderedDict[object, list[tuple[CandidateRequest, dict]]] = OrderedDict()
        seen: set[str] = set()
        for i, request in enumerate(requests):
            cid = request.candidate_id
            if not _SAFE_ID.match(cid):
                results[cid] = _fail(cid, f"candidate_id {cid!r} is not usable as a LeVo idx / file name")
                continue
            if cid in seen:
                results[cid] = _fail(cid, f"candidate_id {cid!r} appears twice in one sample() call")
                continue
            seen.add(cid)
            try:
                record = to_levo_record(request.condition)
            except (KeyError, TypeError) as exc:
                results[cid] = _fail(cid, f"condition is missing field {exc}")
                continue
            record["idx"] = cid
            key = request.seed if self.options.batch_same_seed else (request.seed, i)
            groups.setdefault(key, []).append((request, record))
        for members in groups.values():
            for result in self._run_group(members, out_dir, sampling):
                results[result.candidate_id] = result
        return [results[r.candidate_id] for r in requests]

    def _fill(self, input_jsonl: Path, save_dir: Path, sampling: dict) -> list[str]:
        values = {
            "python": self.options.python,
            "checkpoint_dir": str(self.options.checkpoint_dir),
            "input_jsonl": str(input_jsonl),
            "save_dir": str(save_dir),
            **{key: f"{value:g}" for key, value in sampling.items()},
        }
        return [part.format_map(values) for part in self.options.command]

    def _run_group(self, members: list[tuple[CandidateRequest, dict]], out_dir: Path, sampling: dict) -> list[CandidateResult]:
        seed = members[0][0].seed
        ids = [request.candidate_id for request, _ in members]
        work = Path(tempfile.mkdtemp(prefix=".levo-work-", dir=out_dir)).resolve()
        try:
            input_jsonl = work / "input.jsonl"
            save_dir = work / "save"
            _write_atomic(input_jsonl, "".join(json.dumps(rec, ensure_ascii=False) + "\n" for _, rec in members))
            env = {**os.environ, **self.options.env, self.options.seed_env: str(seed), "PYTHONHASHSEED": str(seed % 2**32),
                   self.options.sampling_env: json.dumps(sampling)}  # fmt: skip
            argv = self._fill(input_jsonl, save_dir, sampling)
            failure = run_generate(argv, Path(self.options.repo_dir), env, self.options.timeout_s, work / "stderr.log")
            if failure is None and "$" + self.options.sampling_env in self._forwarded().values() and not marker_matches(save_dir, sampling):
                failure = f"generate.py did not confirm the sampling it was sent ({json.dumps(sampling)}) in {save_dir.name}/songpref_sampling.json"
            if failure is not None:
                return [_fail(cid, f"{failure} (seed {seed}; candidates in this call: {', '.join(ids)})") for cid in ids]
            self._seed_runs.append(_marker_matches(save_dir / SEED_MARKER, seed))
            return [self._collect(cid, save_dir / "audios", out_dir) for cid in ids]
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _collect(self, cid: str, audios: Path, out_dir: Path) -> CandidateResult:
        wanted = STEM_FILES if self.options.separate_stems else {"": "mix"}
        found: dict[str, Path] = {}
        duration = 0.0
        for suffix, stem in wanted.items():
            src = audios / f"{cid}{suffix}.flac"
            if not src.is_file():
                hint = " (is the flag that separates stems, e.g. --separate, in levo.command?)" if suffix else ""
                return _fail(cid, f"generate.py exited 0 but wrote no {src.name}{hint}")
            try:
                info = soundfile.info(str(src))
            except (RuntimeError, soundfile.LibsndfileError) as exc:
                return _fail(cid, f"{src.name} is not readable audio: {exc}")
            if info.frames <= 0:
                return _fail(cid, f"{src.name} is empty")
            if stem == "mix":
                duration = info.frames / info.samplerate
            found[stem] = src
        dest = out_dir / cid
        dest.mkdir(parents=True, exist_ok=True)
        audio = {}
        for stem, src in found.items():
            final = dest / f"{stem}.flac"
            os.replace(src, final)  # same filesystem: the work dir lies under out_dir
            audio[stem] = final
        return CandidateResult(cid, audio=audio, duration_seconds=duration)


def _marker_matches(marker: Path, seed: int) -> bool:
    try:
        return int(marker.read_text().strip()) == seed
    except (OSError, ValueError):
        return False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fail(cid: str, reason: str) -> CandidateResult:
    return CandidateResult(cid, error=f"levo candidate {cid}: {reason}")
