"""Getting the weights onto a host and checking them before a worker loads them.

``python -m pipelet_wan.models pull t2v|i2v|lightning --dir DIR`` (``pipelet models pull``
runs this) downloads only the files a worker needs with huggingface_hub's
``snapshot_download`` and allow-patterns; run again after an interruption, it resumes
(finished files are skipped, a partial one continues from its ``.incomplete`` part under
``DIR/.cache/huggingface``). With ``HF_HUB_OFFLINE=1``, or when the hub cannot be reached,
it takes the files from the local Hugging Face cache instead (``HF_HUB_CACHE``, e.g. a
cache copied onto an air-gapped host), copying them into ``DIR`` one file at a time
(under a temporary name, then renamed), so an interrupted copy resumes too. Then it checks ``DIR``.

``python -m pipelet_wan.models check DIR`` validates a folder without loading a tensor:
for a model, ``model_index.json`` names a Wan 2.2 A14B pipeline (two experts and a
``boundary_ratio``; not Wan 2.1, not TI2V-5B), every component has its config, every
weight file named by an index is there, and every safetensors file is whole (its header
parses and the file is exactly as long as the header says). For LoRAs, each
``high_noise_model``/``low_noise_model`` pair is whole and in a key layout the runner
merges. Exit status 0 when usable, 1 with a message that says what to do otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
from dataclasses import dataclass, field

# What `pull` fetches: the repo and the files a worker needs (no README, examples, or
# the original non-diffusers checkpoints some repos carry).
_PIPELINE_FILES = [
    "model_index.json",
    "scheduler/*",
    "text_encoder/*",
    "tokenizer/*",
    "transformer/*",
    "transformer_2/*",
    "vae/*",
]
SOURCES = {
    "t2v": ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", _PIPELINE_FILES),
    "i2v": ("Wan-AI/Wan2.2-I2V-A14B-Diffusers", _PIPELINE_FILES),
    # The two Lightning pairs the README recommends (the fast tiers' 4-step LoRAs).
    "lightning": (
        "lightx2v/Wan2.2-Lightning",
        [
            "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/*.safetensors",
            "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/*.safetensors",
        ],
    ),
}
PIPELINE_CLASSES = {"WanPipeline": "t2v", "WanImageToVideoPipeline": "i2v"}
# The largest safetensors header accepted (the A14B shards' are a few hundred KB).
MAX_HEADER_BYTES = 64 << 20


class CheckError(Exception):
    """The folder cannot be used as it is."""


@dataclass
class Report:
    """What ``check`` found: the kind of folder, problems (fatal) and notes."""

    path: str
    kind: str = "unknown"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- safetensors files, headers only ----------------------------------------------------


def safetensors_header(path: str) -> dict:
    """The header of a safetensors file, after checking the file is whole: its length is
    exactly 8 + header + the end of the last tensor. Raises ``CheckError``."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckError(f"{path} is {size} bytes: not a safetensors file (interrupted download?)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckError(f"{path} is truncated or not a safetensors file (header of {n} bytes, file of {size})")
            header = json.loads(f.read(n))
    except OSError as e:
        raise CheckError(f"cannot read {path}: {e}") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckError(f"{path} has a broken safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise CheckError(f"{path} has a broken safetensors header")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckError(f"{path}: tensor {name} has no data_offsets") from None
    if size != 8 + n + end:
        raise CheckError(f"{path} is {size} bytes but its header describes {8 + n + end}: truncated or corrupt (pull again)")
    return header


# --- check ------------------------------------------------------------------------------------


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise CheckError(f"{path} is missing") from None
    except (OSError, ValueError) as e:
        raise CheckError(f"{path} is unreadable: {e}") from e
    if not isinstance(value, dict):
        raise CheckError(f"{path} is not a JSON object")
    return value


def _check_weights(folder: str, stem: str, report: Report) -> int:
    """Check one component's weights (``stem``.safetensors or a sharded index); returns bytes."""
    single = os.path.join(folder, f"{stem}.safetensors")
    index = single + ".index.json"
    rel = os.path.relpath(folder, report.path)
    if os.path.isfile(index):
        try:
            weight_map = _read_json(index).get("weight_map")
        except CheckError as e:
            report.problems.append(str(e))
            return 0
        if not isinstance(weight_map, dict) or not weight_map:
            report.problems.append(f"{index} has no weight_map")
            return 0
        total = 0
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            path = os.path.join(folder, shard)
            if not os.path.isfile(path):
                report.problems.append(f"{rel}/{shard} is missing ({len(shards)} shards in the index)")
                continue
            try:
                header = safetensors_header(path)
            except CheckError as e:
                report.problems.append(str(e))
                continue
            missing = [k for k, v in weight_map.items() if v == shard and k not in header]
            if missing:
                report.problems.append(f"{rel}/{shard} lacks {len(missing)} tensors its index names (e.g. {missing[0]}): a different or broken file")
            total += os.path.getsize(path)
        return total
    if os.path.isfile(single):
        try:
            safetensors_header(single)
            return os.path.getsize(single)
        except CheckError as e:
            report.problems.append(str(e))
            return 0
    report.problems.append(f"{rel}/ has no {stem}.safetensors (nor a sharded index)")
    return 0


def check_model(path: str, expect: str | None = None) -> Report:
    """Validate a diffusers Wan 2.2 A14B folder; ``expect`` is ``t2v`` or ``i2v`` if known."""
    from .memory import is_a14b

    report = Report(path=path)
    try:
        index = _read_json(os.path.join(path, "model_index.json"))
    except CheckError as e:
        report.problems.append(str(e))
        return report
    cls = index.get("_class_name")
    kind = PIPELINE_CLASSES.get(cls)
    if kind is None:
        report.problems.append(f"model_index.json names {cls!r}, not a Wan pipeline (WanPipeline or WanImageToVideoPipeline)")
        return report
    report.kind = kind
    if expect and kind != expect:
        report.problems.append(f"this is a {kind} model ({cls}), not {expect}: pull {expect} into its own folder")
    if index.get("expand_timesteps"):
        report.problems.append("this is Wan2.2-TI2V-5B (one transformer, expand_timesteps), not A14B: pull t2v or i2v (Wan-AI/Wan2.2-*-A14B-Diffusers)")
        return report
    if index.get("boundary_ratio") is None or not index.get("transformer_2") or index.get("transformer_2") == [None, None]:
        report.problems.append("this is a Wan 2.1 model (one transformer, no boundary_ratio), not Wan 2.2 A14B: pull t2v or i2v")
        return report
    total = 0
    for component, stem in (("transformer", "diffusion_pytorch_model"), ("transformer_2", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        folder = os.path.join(path, component)
        try:
            config = _read_json(os.path.join(folder, "config.json"))
        except CheckError as e:
            report.problems.append(str(e))
            continue
        if component.startswith("transformer"):
            want_in = 36 if kind == "i2v" else 16
            if config.get("in_channels") != want_in:
                report.problems.append(f"{component}/config.json has in_channels {config.get('in_channels')}, {kind} needs {want_in}: a different model in this folder?")
            if not is_a14b(config):
                report.notes.append(f"{component} is not the published A14B size ({config.get('num_layers')} layers, {config.get('num_attention_heads')} heads): fine for tests, not for production")
        total += _check_weights(folder, stem, report)
    try:
        _read_json(os.path.join(path, "scheduler", "scheduler_config.json"))
    except CheckError as e:
        report.problems.append(str(e))
    tok = os.path.join(path, "tokenizer")
    if not any(os.path.isfile(os.path.join(tok, f)) for f in ("tokenizer.json", "spiece.model")):
        report.problems.append("tokenizer/ has neither tokenizer.json nor spiece.model")
    report.notes.append(f"{kind} A14B pipeline, boundary_ratio {index.get('boundary_ratio')}, {total / 1e9:.1f} GB of weights")
    return report


def check_loras(path: str) -> Report:
    """Validate a folder of Lightning LoRA pairs (or one pair)."""
    from .loras import LoraError, check_keys

    report = Report(path=path, kind="lightning")
    pairs = []
    for root, _dirs, files in sorted(os.walk(path)):
        if ".cache" in os.path.relpath(root, path).split(os.sep):
            continue
        if "high_noise_model.safetensors" in files or "low_noise_model.safetensors" in files:
            pairs.append(root)
    if not pairs:
        report.problems.append("no high_noise_model.safetensors / low_noise_model.safetensors here: pull lightning into this folder")
        return report
    for folder in pairs:
        rel = os.path.relpath(folder, path)
        layouts = []
        for name in ("high_noise_model.safetensors", "low_noise_model.safetensors"):
            file = os.path.join(folder, name)
            if not os.path.isfile(file):
                report.problems.append(f"{rel}/{name} is missing (each variant needs both experts' files)")
                continue
            try:
                layouts.append(check_keys([k for k in safetensors_header(file) if k != "__metadata__"]))
            except (CheckError, LoraError) as e:
                report.problems.append(f"{rel}/{name}: {e}")
        if len(layouts) == 2:
            flag = "--wan-i2v-lora" if "i2v" in rel.lower() else "--wan-t2v-lora"
            report.notes.append(f"{rel}: LoRA pair ({layouts[0]} key layout); use {flag} {os.path.abspath(folder)}")
    return report


def check(path: str, expect: str | None = None) -> Report:
    """Validate ``path`` as what ``expect`` says, or as what it holds: a model folder
    (``model_index.json``) or LoRA pairs."""
    if not os.path.isdir(path):
        return Report(path=path, problems=[f"{path} is not a folder"])
    if expect == "lightning":
        return check_loras(path)
    if expect or os.path.isfile(os.path.join(path, "model_index.json")):
        return check_model(path, expect)
    report = check_loras(path)
    if not any(n.endswith(".safetensors") for _, _, names in os.walk(path) for n in names):
        report = Report(path=path, problems=["neither a model folder (no model_index.json) nor LoRA pairs: pull t2v, i2v or lightning into it"])
    return report


# --- pull -------------------------------------------------------------------------------------


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _from_cache(repo: str, patterns: list[str], target: str) -> int:
    """Place the cached snapshot's files matching ``patterns`` into ``target``; returns how
    many were placed (files already there with the right size are kept)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    snapshot = snapshot_download(repo, allow_patterns=patterns, local_files_only=True)
    names = []
    for root, _dirs, files in os.walk(snapshot):
        for f in files:
            names.append(os.path.relpath(os.path.join(root, f), snapshot))
    placed = 0
    for name in filter_repo_objects(names, allow_patterns=patterns):
        src = os.path.realpath(os.path.join(snapshot, name))
        dst = os.path.join(target, name)
        if os.path.isfile(dst) and os.path.getsize(dst) == os.path.getsize(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = dst + ".pipelet-partial"
        if os.path.exists(tmp):
            os.unlink(tmp)
        # A copy, not a link: the folder must not share inodes with the cache's blobs (an
        # edit here would corrupt the cache, and cleaning the cache must not touch it).
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        placed += 1
    return placed


def pull(what: str, target: str, log=print) -> Report:
    """Fetch ``what`` (t2v, i2v, lightning) into ``target`` and check it."""
    repo, patterns = SOURCES[what]
    os.makedirs(target, exist_ok=True)
    from huggingface_hub import snapshot_download

    if not _offline():
        try:
            log(f"downloading {repo} ({', '.join(patterns)}) into {target}; run again to resume if interrupted")
            snapshot_download(repo, local_dir=target, allow_patterns=patterns)
        except Exception as e:  # no network, hub down, proxy: try the local cache
            log(f"the hub is not reachable ({type(e).__name__}: {e}); trying the local Hugging Face cache")
            try:
                placed = _from_cache(repo, patterns, target)
            except Exception as cache_error:
                raise CheckError(f"cannot download {repo} ({e}) and it is not in the local cache ({cache_error})") from cache_error
            log(f"placed {placed} files from the local cache")
    else:
        log(f"HF_HUB_OFFLINE is set: taking {repo} from the local Hugging Face cache")
        try:
            placed = _from_cache(repo, patterns, target)
        except Exception as e:
            raise CheckError(f"{repo} is not in the local Hugging Face cache ({type(e).__name__}: {e}); unset HF_HUB_OFFLINE to download it") from e
        log(f"placed {placed} files from the local cache")
    return check(target, what)


def _print_report(report: Report, out) -> None:
    for note in report.notes:
        print(f"  {note}", file=out)
    for problem in report.problems:
        print(f"  problem: {problem}", file=out)
    if report.ok:
        print(f"{report.path}: OK ({report.kind})", file=out)
    else:
        print(f"{report.path}: NOT USABLE ({len(report.problems)} problem{'s' if len(report.problems) > 1 else ''})", file=out)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelet_wan.models pull WHAT --dir DIR`` or ``check DIR``."""
    p = argparse.ArgumentParser(prog="python -m pipelet_wan.models", description="get and check Wan 2.2 weights")
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("pull", help="download t2v, i2v or lightning into a folder (resumable)")
    pp.add_argument("what", choices=sorted(SOURCES))
    pp.add_argument("--dir", required=True)
    pc = sub.add_parser("check", help="validate a model or LoRA folder")
    pc.add_argument("dir")
    pc.add_argument("--expect", choices=sorted(SOURCES), help="what the folder must hold")
    args = p.parse_args(argv)
    try:
        if args.command == "pull":
            report = pull(args.what, args.dir, log=lambda m: print(m, file=sys.stderr))
            if not report.ok:
                report.problems.append(f"run `pipelet models pull {args.what} --dir {args.dir}` again to fetch what is missing")
        else:
            report = check(args.dir, args.expect)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _print_report(report, sys.stdout)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
