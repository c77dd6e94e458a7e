"""Benchmark: pocketsphinx + PER over the vocals stems of a tiny round's candidates, on CPU.

    songpref round run --config configs/tiny.yaml --out /tmp/tinyround --until candidates
    .venv/bin/python benchmarks/asr_cpu.py --round /tmp/tinyround

Without --round it renders its own songs (template lyrics, the tiny composer and renderer), so
every song is sung as written. Reports audio seconds, wall seconds (worker start-up included),
speed as x real time overall and per worker, and the workers' CPU seconds: audio / CPU seconds
is the per-core speed an idle machine would show, as the wall figures suffer from whatever else
runs. The load average before and after is printed so a contended figure reads as one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import soundfile as sf

from pipeline.scoring.base import ScoringItem
from pipeline.scoring.per import error_rates_batch
from pipeline.scoring.pocketsphinx_asr import PocketsphinxOptions, PocketsphinxTranscriber


def round_items(root: Path, limit: int | None) -> tuple[list[ScoringItem], list[str]]:
    """Vocals stems of the round's candidates that rendered, and every lyric of the round."""
    import pyarrow.parquet as pq

    def rows(stage: str) -> list[dict]:  # the stage's Parquet shards only (candidates/ also holds audio/)
        return [r for shard in sorted((root / stage).glob("*.parquet")) for r in pq.read_table(shard).to_pylist()]

    conditions = {r["condition_id"]: r for r in rows("conditions")}
    items = []
    for row in rows("candidates"):
        if row.get("error") or not row.get("vocals_uri"):
            continue
        c = conditions[row["condition_id"]]
        items.append(ScoringItem(row["candidate_id"], root / row["vocals_uri"], c["lyric"], c["language"],
                                 c["description"]))
    return items[:limit], [c["lyric"] for c in conditions.values()]


def rendered_items(count: int, folder: Path) -> tuple[list[ScoringItem], list[str]]:
    """`count` songs rendered from template-like lyrics (no round needed)."""
    from pipeline.models.tiny.composer import compose
    from pipeline.models.tiny.renderer import render, write_stems

    lines = ["The sun is shining on the hill.", "We walk together in the light.", "Hold my hand and sing with me.",
             "I miss the river and the rain.", "The night is cold without you here.", "Come back home to me tonight."]
    rng, items = random.Random(0), []
    for i in range(count):
        lyric = f"[verse] {' '.join(rng.sample(lines, 2))} ; [chorus] {rng.choice(lines)}"
        condition = {"lyric": lyric, "gender": rng.choice(["male", "female"]), "genre": "Pop", "emotion": "happy",
                     "instruments": ["piano"], "bpm": rng.randint(80, 130)}
        path = write_stems(render(compose(condition, rng)), folder / f"song-{i}")["vocals"]
        items.append(ScoringItem(f"song-{i}", path, lyric, "en", "pop"))
    return items, [it.lyric for it in items]


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the decoding workers)."""
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round", type=Path, default=None, help="a round with candidates (default: render songs)")
    parser.add_argument("--songs", type=int, default=32, help="songs to render without --round")
    parser.add_argument("--limit", type=int, default=None, help="at most this many candidates")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-lyrics-lm", action="store_true", help="the wheel's general LM instead")
    args = parser.parse_args()

    if args.round:
        items, lyrics = round_items(args.round, args.limit)
    else:
        items, lyrics = rendered_items(args.songs, Path(tempfile.mkdtemp(prefix="songpref-asr-bench-")))
    audio_s = sum(sf.info(str(it.audio_path)).duration for it in items)
    load_before = os.getloadavg()

    asr = PocketsphinxTranscriber(PocketsphinxOptions(workers=args.workers, lyrics_lm=not args.no_lyrics_lm))
    started = time.perf_counter()
    asr.prepare(lyrics)
    prepare_s = time.perf_counter() - started
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    transcripts = asr.transcribe(items)
    asr_s = time.perf_counter() - started
    asr.close()  # reaps the workers, so their CPU time is counted below
    cpu_s = cpu_seconds() - cpu_before

    started = time.perf_counter()
    rates = error_rates_batch([(it.lyric, t.text, it.language) for it, t in zip(items, transcripts)])
    per_s = time.perf_counter() - started
    pers = [r.per for r, t in zip(rates, transcripts) if not isinstance(r, Exception) and t.error is None]
    wall = asr_s + per_s
    print(json.dumps({
        "source": str(args.round) if args.round else f"{args.songs} rendered songs",
        "candidates": len(items),
        "errors": sum(t.error is not None for t in transcripts),
        "lyrics_lm": not args.no_lyrics_lm,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "audio_seconds": round(audio_s, 1),
        "prepare_seconds": round(prepare_s, 2),
        "transcribe_wall_seconds": round(asr_s, 2),
        "per_wall_seconds": round(per_s, 2),
        "x_real_time": round(audio_s / wall, 2),
        "x_real_time_per_worker": round(audio_s / wall / args.workers, 2),
        "transcribe_cpu_seconds": round(cpu_s, 1),
        "x_real_time_per_cpu_second": round(audio_s / cpu_s, 2),
        "per_mean": round(statistics.fmean(pers), 2) if pers else None,
        "per_median": round(statistics.median(pers), 2) if pers else None,
        "per_over_40": sum(p > 40 for p in pers),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }, indent=2))


if __name__ == "__main__":
    main()
