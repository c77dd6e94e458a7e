"""The three measured parts of benchmarks/scaling_gpu.py, each run by every process of a
torch.distributed launch (one process per GPU); the main process returns the part's figures.

- dpo: the LeVo-shaped policy (benchmarks/dpo_gpu.py's presets) through MultiStreamDPOTrainer, the
  policy wrapped by accelerate in DDP or FSDP; `batch` pairs per GPU and micro-batch, so the pairs
  per step grow with the GPUs (weak scaling). tokens/s over the timed steps, all processes' tokens.
- per: the whisper transcriber (the `scores/per` stage's cost) on one shard of songs per GPU;
  audio seconds per second over the slowest process's wall time.
- candidates: songs sampled by the policy (tokens; rendering is the embedded world's CPU synth),
  one shard of candidate batches per GPU; candidates per second.
Every song and candidate is fixed by its global index alone, so each part also returns a digest
per item: a run on N GPUs must give the one-GPU run's digests.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import time
from pathlib import Path

import torch

CONDITION_COUNT = 4  # benchmarks.dpo_throughput.CONDITIONS


def rank_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def device_for(cuda: bool) -> torch.device:
    """This process's GPU (its local rank), made current so that "cuda" means it, or the CPU."""
    if not cuda:
        return torch.device("cpu")
    torch.cuda.set_device(rank_info()[2])
    return torch.device("cuda", rank_info()[2])


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _group(cuda: bool):
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device_for(cuda) if cuda else None)
    return dist


def _timed_together(dist, cuda: bool, work):
    """Run `work` on every process at once; (its result here, wall seconds of the slowest)."""
    dist.barrier()
    started = time.perf_counter()
    result = work()
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    return result, time.perf_counter() - started


def dpo_part(job: dict) -> dict | None:
    import trl.trainer.dpo_trainer as dpo_module
    from datasets import load_dataset

    from alignment.dpo.options import DpoOptions
    from benchmarks.dpo_gpu import build_policy
    from benchmarks.dpo_throughput import StepClock, TimedMultiStreamDPOTrainer
    from pipeline.models.tiny.model import TinyLeLMConfig
    from pipeline.models.tiny.preference_text import TinySongTokenizer, TokenLayout

    rank, world, _ = rank_info()
    cuda = job["cuda"]
    dpo_module.hash_module = lambda module: f"scaling-{job['size']}-{world}"  # no hash of every weight on the host
    config = TinyLeLMConfig(**job["policy_config"])
    data = load_dataset("parquet", data_files={"train": job["pairs_file"]}, cache_dir=job["cache_dir"])["train"]
    model = build_policy(config, device_for(cuda), torch.bfloat16 if cuda else torch.float32)
    parameters = sum(p.numel() for p in model.parameters())  # before FSDP shards them
    options = DpoOptions(max_steps=job["warmup"] + job["steps"], batch_size=job["batch"] * world,
                         gradient_accumulation_steps=job["accumulate"], save_steps=10**9, precompute_ref_log_probs=True,
                         device="auto" if cuda else "cpu")  # fmt: skip
    args = options.dpo_config(Path(job["folder"]) / "dpo", 0, world, job["sharding"], ["LlamaDecoderLayer"])
    args.disable_tqdm = True
    clock = StepClock(job["warmup"], float("inf"), sync=torch.cuda.synchronize if cuda else None)
    trainer = TimedMultiStreamDPOTrainer(model=model, ref_model=None, args=args, train_dataset=data,
                                         processing_class=TinySongTokenizer(layout=TokenLayout.from_config(config).__dict__),
                                         callbacks=[clock])  # fmt: skip
    clock.trainer = trainer
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    w = job["warmup"]
    wall, tokens = clock.ends[-1] - clock.ends[w - 1], clock.tokens[-1] - clock.tokens[w - 1]
    if rank != 0:
        return None
    return {"tokens_per_s": tokens / wall, "seconds_per_step": wall / (len(clock.ends) - w), "timed_steps": len(clock.ends) - w,
            "pairs_per_step": job["batch"] * world * job["accumulate"], "tokens": tokens,
            "parameters": parameters, "sharding": job["sharding"] if world > 1 else None,
            "distributed": trainer.accelerator.distributed_type.value,
            "peak_memory_gib_rank0": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}  # fmt: skip


def per_part(job: dict) -> dict | None:
    from benchmarks.whisper_gpu import build_model, write_songs
    from pipeline.scoring.whisper_asr import WhisperOptions, WhisperTranscriber, load_audio

    import whisper

    rank, world, _ = rank_info()
    cuda, dist = job["cuda"], _group(job["cuda"])
    model = build_model(job["seed"], job["whisper_dims"], str(device_for(cuda)))
    eot = whisper.tokenizer.get_tokenizer(True, num_languages=model.num_languages).eot
    options = WhisperOptions(checkpoint="random", device="cuda" if cuda else "cpu", fp16=cuda, max_tokens=job["tokens"],
                             suppress_tokens=f"-1,{eot}", vad_threshold_db=-60.0)  # every window decodes --tokens tokens
    transcriber = WhisperTranscriber(options, model=model)
    mine = range(rank * job["songs_per_gpu"], (rank + 1) * job["songs_per_gpu"])  # global song indices
    items = []
    for i in mine:  # song i from seed + i alone, whichever process writes it
        folder = Path(job["folder"]) / f"song-{i:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        song = write_songs(folder, 1, job["song_seconds"] * 0.8, job["song_seconds"], job["seed"] + i)[0]
        items.append(dataclasses.replace(song, candidate_id=f"song{i:05d}"))
    audio = sum(load_audio(i.audio_path).size / 16000 for i in items)
    transcriber.transcribe(items)  # a cold pass: the fast decoder captures a CUDA graph set per batch size it meets
    texts, wall = _timed_together(dist, cuda, lambda: [t.text for t in transcriber.transcribe(items)])
    gathered = [None] * world
    dist.all_gather_object(gathered, (audio, {i: _digest(t) for i, t in zip(mine, texts)}))
    if rank != 0:
        return None
    total = sum(a for a, _ in gathered)
    return {"audio_seconds_per_second": total / wall, "audio_seconds": total, "wall_seconds": wall,
            "songs": world * job["songs_per_gpu"], "digests": {k: v for _, d in gathered for k, v in d.items()}}  # fmt: skip


def candidates_part(job: dict) -> dict | None:
    from benchmarks.dpo_gpu import build_policy
    from benchmarks.dpo_throughput import CONDITIONS
    from pipeline.models.tiny.model import TinyLeLMConfig

    rank, world, _ = rank_info()
    cuda, dist = job["cuda"], _group(job["cuda"])
    model = build_policy(TinyLeLMConfig(**job["policy_config"]), device_for(cuda), torch.bfloat16 if cuda else torch.float32).eval()
    size, per_gpu = job["candidate_batch"], job["batches_per_gpu"]
    mine = range(rank * per_gpu, (rank + 1) * per_gpu)  # global batch indices: batch b is condition b % 4, seeds b*size..

    def sample():
        return {b: model.sample_batch(CONDITIONS[b % CONDITION_COUNT], list(range(b * size, (b + 1) * size)),
                                      max_frames=job["sample_frames"]) for b in mine}  # fmt: skip

    model.sample_batch(CONDITIONS[0], [10**6], max_frames=4)  # kernels, allocator
    songs, wall = _timed_together(dist, cuda, sample)
    gathered = [None] * world
    dist.all_gather_object(gathered, {b * size + j: _digest(s) for b, batch in songs.items() for j, s in enumerate(batch)})
    if rank != 0:
        return None
    digests = {k: v for d in gathered for k, v in d.items()}
    return {"candidates_per_second": len(digests) / wall, "candidates": len(digests), "wall_seconds": wall,
            "frames_max": job["sample_frames"], "digests": digests}  # fmt: skip


PARTS = {"dpo": dpo_part, "per": per_part, "candidates": candidates_part}


def main(parts: str, job_file: str) -> None:
    """Run the parts (comma-separated) in order; the main process writes `<part>.json` after each.
    A part that fails raises on its process, and torch.distributed.run ends the launch."""
    job = json.loads(Path(job_file).read_text())
    for part in parts.split(","):
        try:
            result = PARTS[part](job)
        except BaseException:
            import traceback

            (Path(job["folder"]) / f"{part}-rank{rank_info()[0]}.error").write_text(traceback.format_exc())
            raise
        if result is not None:  # the main process
            out = Path(job["folder"]) / f"{part}.json"
            out.with_suffix(".tmp").write_text(json.dumps(result))
            out.with_suffix(".tmp").replace(out)
        gc.collect()  # the part's models go before the next part's arrive
        if job["cuda"]:
            torch.cuda.empty_cache()
