"""Test stand-in for SongGeneration's generate.py: same file contract, no model.

    python generate.py <ckpt_dir> <input.jsonl> <save_dir> [gen_type] [--separate]

Checks each record's prompt fields as upstream does (prompt_audio_path and
auto_prompt_audio_type are mutually exclusive; a prompt clip must exist) and exits non-zero
with a message otherwise. Seeds from $SONGPREF_SEED like a patched upstream (and writes the
<save_dir>/songpref_seed.txt marker), else from the clock like unpatched upstream. Writes a
2 s 48 kHz sine per record to <save_dir>/audios/<idx>.flac (pitch from seed and idx) and,
with --separate, <idx>_vocal.flac and <idx>_bgm.flac; then <save_dir>/jsonl/<input>.jsonl.
Reads $SONGPREF_SAMPLING as upstream patched with UPSTREAM_SAMPLING_PATCH does (upstream's
values where a key is absent) and writes the <save_dir>/songpref_sampling.json marker.
Test hooks: a record whose gt_lyric contains "FAIL" gets no output file; $STANDIN_SLEEP
seconds of sleep first (timeouts); $STANDIN_LOG gets one JSON line per call;
$STANDIN_FORGET_SAMPLING leaves the sampling marker out (a patch gone wrong).
"""

import hashlib
import json
import os
import sys
import time

import numpy as np
import soundfile

SAMPLE_RATE = 48000
SECONDS = 2.0


def tone(freq: float) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def main(argv: list[str]) -> int:
    separate = "--separate" in argv
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) < 3:
        print("usage: generate.py <ckpt_dir> <input.jsonl> <save_dir> [gen_type] [--separate]", file=sys.stderr)
        return 2
    ckpt_dir, input_jsonl, save_dir = positional[:3]
    gen_type = positional[3] if len(positional) > 3 else "all"
    if not os.path.isdir(ckpt_dir):
        print(f"checkpoint dir {ckpt_dir} not found", file=sys.stderr)
        return 1
    if os.environ.get("STANDIN_SLEEP"):
        time.sleep(float(os.environ["STANDIN_SLEEP"]))
    seed_text = os.environ.get("SONGPREF_SEED")
    seed = int(seed_text) if seed_text is not None else time.time_ns()
    np.random.seed(seed % 2**32)
    os.makedirs(os.path.join(save_dir, "audios"), exist_ok=True)
    os.makedirs(os.path.join(save_dir, "jsonl"), exist_ok=True)
    if seed_text is not None:
        with open(os.path.join(save_dir, "songpref_seed.txt"), "w") as fh:
            fh.write(str(seed))
    sampling = {"cfg_coef": 1.5, "temperature": 0.9, "top_k": 50, "top_p": 0.0, **json.loads(os.environ.get("SONGPREF_SAMPLING", "{}"))}
    if "SONGPREF_SAMPLING" in os.environ and not os.environ.get("STANDIN_FORGET_SAMPLING"):
        with open(os.path.join(save_dir, "songpref_sampling.json"), "w") as fh:
            fh.write(json.dumps(sampling))

    with open(input_jsonl, encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    if os.environ.get("STANDIN_LOG"):
        with open(os.environ["STANDIN_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps({"seed": seed_text, "records": items, "gen_type": gen_type, "separate": separate,
                                 "sampling": sampling, "argv": argv}) + "\n")

    new_items = []
    for item in items:
        if "prompt_audio_path" in item:
            if not os.path.exists(item["prompt_audio_path"]):
                print(f"prompt_audio_path {item['prompt_audio_path']} not found", file=sys.stderr)
                return 1
            if "auto_prompt_audio_type" in item:
                print("auto_prompt_audio_type and prompt_audio_path cannot be used together", file=sys.stderr)
                return 1
        if "FAIL" in item["gt_lyric"]:
            print(f"stand-in: skipping {item['idx']} (FAIL in lyric)", file=sys.stderr)
            continue
        digest = hashlib.sha256(f"{seed}:{item['idx']}".encode()).digest()
        # a continuous pitch: two clock seeds must not collide on one of a few hundred whole hertz
        freq = 220.0 + 440.0 * int.from_bytes(digest[:4], "big") / 2**32
        vocal, bgm = tone(freq), tone(freq / 2)
        target = os.path.join(save_dir, "audios", f"{item['idx']}.flac")
        soundfile.write(target, vocal + bgm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        if separate:
            for suffix, wave in (("_vocal", vocal), ("_bgm", bgm)):
                path = os.path.join(save_dir, "audios", f"{item['idx']}{suffix}.flac")
                soundfile.write(path, wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        item["wav_path"] = target
        new_items.append(item)

    name = os.path.split(input_jsonl)[-1]
    with open(os.path.join(save_dir, "jsonl", f"{name}.jsonl"), "w", encoding="utf-8") as fw:
        for item in new_items:
            fw.write(json.dumps(item, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
