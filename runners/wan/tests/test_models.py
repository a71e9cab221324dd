"""``pull`` and ``check`` offline, against a Hugging Face hub cache built on disk here.

The cache has the standard layout (``models--ORG--NAME/{blobs,refs,snapshots}``) and holds
the tiny pipelines saved with sharded weights, plus files a worker does not need (which
``pull`` must leave behind). ``HF_HUB_OFFLINE=1`` is set, as on an air-gapped host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from pipelet_wan import models
from pipelet_wan.pipelines import Options, Pipelines
from pipelet_wan.protocol import Load

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_cache(cache, repo: str, staging) -> None:
    """Put every file under ``staging`` into the hub cache as ``repo`` at ``COMMIT``."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    for dirpath, _dirs, files in os.walk(staging):
        for name in files:
            src = os.path.join(dirpath, name)
            rel = os.path.relpath(src, staging)
            data = open(src, "rb").read()
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = root / "snapshots" / COMMIT / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)


@pytest.fixture(scope="module")
def hub(tiny_models, tmp_path_factory):
    """A hub cache with t2v (sharded), i2v, a TI2V-5B look-alike and the LoRA repo."""
    from diffusers import WanPipeline

    base = tmp_path_factory.mktemp("hub")
    cache = base / "cache"
    staging = base / "t2v"
    WanPipeline.from_pretrained(str(tiny_models / "t2v")).save_pretrained(str(staging), max_shard_size="40KB")
    (staging / "README.md").write_text("model card")
    (staging / "assets").mkdir()
    (staging / "assets" / "demo.mp4").write_bytes(b"\0" * 1000)
    (staging / "high_noise_model").mkdir()
    (staging / "high_noise_model" / "original.safetensors").write_bytes(b"\0" * 1000)
    add_to_cache(cache, "Wan-AI/Wan2.2-T2V-A14B-Diffusers", staging)
    add_to_cache(cache, "Wan-AI/Wan2.2-I2V-A14B-Diffusers", tiny_models / "i2v")
    loras = base / "lightning"
    for variant in ("Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1", "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1", "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1"):
        shutil.copytree(tiny_models / "lora", loras / variant)
    (loras / "README.md").write_text("card")
    add_to_cache(cache, "lightx2v/Wan2.2-Lightning", loras)
    return cache


@pytest.fixture
def offline(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return hub


def files_under(path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs}


def test_pull_t2v_takes_only_what_a_worker_needs_and_the_result_loads(offline, tmp_path, capsys):
    target = tmp_path / "t2v"
    assert models.main(["pull", "t2v", "--dir", str(target)]) == 0
    assert "OK (t2v)" in capsys.readouterr().out
    got = files_under(target)
    assert "model_index.json" in got and "transformer/diffusion_pytorch_model.safetensors.index.json" in got
    assert sum(1 for f in got if f.startswith("transformer/diffusion_pytorch_model-0")) > 1, "sharded"
    assert not any(f.startswith(("README", "assets/", "high_noise_model/")) for f in got), got
    # Plain files, not links into the cache: the folder survives the cache being cleaned.
    assert not any(os.path.islink(target / f) for f in got)
    resident = Pipelines(Options()).load(Load("t2v", str(target)))
    assert resident.pipe.transformer_2 is not None


def test_an_interrupted_pull_resumes_and_keeps_finished_files(offline, tmp_path):
    target = tmp_path / "t2v"
    assert models.pull("t2v", str(target), log=lambda m: None).ok
    shards = sorted(f for f in files_under(target) if f.startswith("transformer/diffusion_pytorch_model-0"))
    gone, cut = target / shards[0], target / shards[1]
    kept = target / "vae" / "config.json"
    inode = os.stat(kept).st_ino
    want_cut = cut.read_bytes()
    gone.unlink()
    with open(cut, "r+b") as f:  # a copy stopped half way
        f.truncate(len(want_cut) // 2)
    broken = models.check(str(target))
    assert not broken.ok
    assert any(shards[0] in p and "missing" in p for p in broken.problems), broken.problems
    assert any("truncated" in p for p in broken.problems), broken.problems
    assert models.pull("t2v", str(target), log=lambda m: None).ok
    assert cut.read_bytes() == want_cut and gone.is_file()
    assert os.stat(kept).st_ino == inode, "finished files are not fetched again"


def test_pull_lightning_and_check_the_pairs(offline, tmp_path):
    target = tmp_path / "lightning"
    report = models.pull("lightning", str(target), log=lambda m: None)
    assert report.ok, report.problems
    assert {os.path.dirname(f) for f in files_under(target)} == {
        "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1",
        "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1",
    }
    assert any("--wan-t2v-lora" in n for n in report.notes) and any("--wan-i2v-lora" in n for n in report.notes)
    (target / "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1" / "low_noise_model.safetensors").unlink()
    report = models.check(str(target))
    assert not report.ok and "low_noise_model.safetensors is missing" in report.problems[0]


def test_check_names_the_wrong_model(offline, tmp_path, tiny_models):
    i2v = tmp_path / "i2v"
    assert models.pull("i2v", str(i2v), log=lambda m: None).ok
    wrong = models.check(str(i2v), "t2v")
    assert not wrong.ok and "i2v model" in wrong.problems[0]
    # TI2V-5B: one transformer, expand_timesteps.
    ti2v = tmp_path / "ti2v"
    shutil.copytree(tiny_models / "t2v", ti2v)
    index = json.loads((ti2v / "model_index.json").read_text())
    index.update(transformer_2=[None, None], boundary_ratio=None, expand_timesteps=True)
    (ti2v / "model_index.json").write_text(json.dumps(index))
    report = models.check(str(ti2v))
    assert not report.ok and "TI2V-5B" in report.problems[0]
    # Wan 2.1: no second expert.
    del index["expand_timesteps"]
    index.pop("transformer_2")
    (ti2v / "model_index.json").write_text(json.dumps(index))
    assert "Wan 2.1" in models.check(str(ti2v)).problems[0]
    # Not a model at all.
    (tmp_path / "empty").mkdir()
    assert "neither a model folder" in models.check(str(tmp_path / "empty")).problems[0]


def test_pull_of_a_repo_not_in_the_cache_says_so(offline, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(models.SOURCES, "t2v", ("Wan-AI/not-cached", ["*.json"]))
    assert models.main(["pull", "t2v", "--dir", str(tmp_path / "x")]) == 1
    assert "not in the local Hugging Face cache" in capsys.readouterr().err
