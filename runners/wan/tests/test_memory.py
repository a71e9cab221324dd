"""The memory plan: weights counted on the meta device, activations traced, the fit check.

The weight accounting is checked against the real loader (the tiny pipelines loaded by
``Pipelines`` in bfloat16, with and without FP8); the stored activation peaks of the
published A14B are re-traced where that is quick; the fit check is a pure function of
the GPU size, and the runner refuses to start with its message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipelet_wan import memory
from pipelet_wan.memory import GIB, PUBLISHED, Setup
from pipelet_wan.pipelines import Options, Pipelines
from pipelet_wan.protocol import Load

from conftest import RUNNER_DIR


def loaded_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


@pytest.mark.parametrize("fp8", [False, True])
def test_meta_accounting_equals_what_the_runner_loads(tiny_models, fp8):
    configs, source = memory.configs_of(str(tiny_models / "t2v"), "t2v")
    assert source == str(tiny_models / "t2v")
    planned = memory.weights(configs, "bfloat16", fp8)
    pipe = Pipelines(Options(dtype="bfloat16", fp8=fp8)).load(Load("t2v", str(tiny_models / "t2v"))).pipe
    for component in memory.COMPONENTS:
        assert planned[component].total == loaded_bytes(getattr(pipe, component)), component


def test_published_a14b_parameters():
    t2v, i2v = memory.parameter_counts(PUBLISHED["t2v"]), memory.parameter_counts(PUBLISHED["i2v"])
    assert t2v == {"text_encoder": 5_680_910_336, "transformer": 14_288_491_584, "transformer_2": 14_288_491_584, "vae": 126_892_531}
    # i2v's patch embedding takes 36 channels (latents, mask, image) instead of 16.
    assert i2v["transformer"] - t2v["transformer"] == 20 * 1 * 2 * 2 * 5120
    w = memory.weights(PUBLISHED["t2v"], "bfloat16", fp8=False)
    w8 = memory.weights(PUBLISHED["t2v"], "bfloat16", fp8=True)
    # bf16 with diffusers' float32 modules: a little over 2 bytes a parameter.
    assert 2 * t2v["transformer"] < w["transformer"].total < 2.02 * t2v["transformer"]
    # FP8 storage: every linear layer at 1 byte, norms/embeddings as before.
    assert 0.5 < w8["transformer"].total / w["transformer"].total < 0.52
    assert w8["transformer"].upcast == (5120 * 13824 + 13824) * 2, "one FFN layer in bf16 at a time"
    assert w["text_encoder"].largest_layer == 256384 * 4096 * 2, "the UMT5 embedding"


def test_stored_activations_are_what_a_trace_gives():
    # The quick phases; `python -m pipelet_wan.memory --trace` recomputes all of them.
    assert memory.ACTIVATIONS.keys() == set(memory.SIZES)
    small, large = memory.SIZES
    traced = memory.trace_activations(PUBLISHED["t2v"], *large, phases=("transformer",))
    traced_i2v = memory.trace_activations(PUBLISHED["i2v"], *large, phases=("transformer",))
    assert memory.ACTIVATIONS[large]["transformer"] == max(traced["transformer"], traced_i2v["transformer"])
    traced = memory.trace_activations(PUBLISHED["t2v"], *small, phases=("text_encoder", "vae_decode"))
    for phase, value in traced.items():
        assert memory.ACTIVATIONS[small][phase] == value, phase
    acts = memory.ACTIVATIONS[large]
    assert acts["vae_decode_tiled"] < acts["vae_decode"] / 4 and acts["vae_encode_tiled"] < acts["vae_encode"] / 4


def fake_weights(**gib) -> dict:
    return {c: memory.ComponentBytes(total=int(gib[c] * GIB), largest_layer=int(gib[c] * GIB / 100)) for c in memory.COMPONENTS}


def test_plan_phases_follow_the_offload_hooks():
    w = fake_weights(text_encoder=10, transformer=20, transformer_2=20, vae=1)
    acts = {"text_encoder": 0, "transformer": 5 * GIB, "vae_decode": 8 * GIB, "vae_encode": 6 * GIB, "vae_decode_tiled": 2 * GIB, "vae_encode_tiled": 1 * GIB}
    none = memory.plan("t2v", w, acts)
    assert none.gpu == 59 * GIB and none.host == 0
    assert memory.plan("t2v", w, acts, vae_tiling=True).gpu == 56 * GIB
    model = memory.plan("i2v", w, acts, offload="model")
    # The i2v image encode runs while the text encoder is still on the GPU.
    assert dict(model.phases)["vae_encode"] == (10 + 1 + 6) * GIB
    assert model.gpu == (1 + 20 + 5) * GIB and model.host == 51 * GIB
    seq = memory.plan("t2v", w, acts, offload="sequential")
    # One layer's weights at a time: the VAE decode (8 GiB of activations) is the peak.
    assert seq.gpu == int(0.01 * 1 * GIB) + 8 * GIB


@pytest.mark.parametrize(
    "gpu_gib, setup, fits",
    [
        # An 80 GB H100 (79.1 GiB, ~78.5 free): bf16 without offload needs the tiled VAE at 720p.
        (78.5, Setup(), False),
        (78.5, Setup(vae_tiling=True), True),
        (78.5, Setup(fp8=True), True),
        (78.5, Setup(max_loaded=2, fp8=True), False),
        (139.0, Setup(), True),  # a 141 GB H200
        (139.0, Setup(max_loaded=2), False),  # t2v and i2v both resident
        (139.0, Setup(max_loaded=2, fp8=True), True),
        (23.0, Setup(offload="model", fp8=True, vae_tiling=True), False),
        (31.0, Setup(offload="model", fp8=True, vae_tiling=True), True),
        (23.0, Setup(offload="sequential", vae_tiling=True), True),
    ],
)
def test_the_fit_check_for_given_gpu_sizes(gpu_gib, setup, fits):
    both = {"t2v": PUBLISHED["t2v"], "i2v": PUBLISHED["i2v"]}
    message = memory.check_fit(both, setup, int(gpu_gib * GIB), "cuda:0 (test)")
    assert (message is None) == fits, message
    if message:
        assert setup.flags() in message and "cuda:0 (test)" in message and "--wan-skip-memory-check" in message
        # Every option set it suggests does fit.
        suggested = message.split("these fit: ")[1].split("). Pass")[0] if "these fit" in message else ""
        for flags in [s.split(" (~")[0] for s in suggested.split(", ") if s]:
            alt = Setup(
                offload=flags.split("--wan-offload ")[1].split()[0],
                fp8="--wan-fp8" in flags,
                vae_tiling="--wan-vae-tiling" in flags,
                max_loaded=setup.max_loaded,
            )
            assert memory.check_fit(both, alt, int(gpu_gib * GIB)) is None, flags


def start(*args: str):
    env = dict(os.environ, PYTHONPATH=str(RUNNER_DIR), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "pipelet_wan", "--device", "cpu", "--dtype", "bfloat16", *args],
        input=b"", capture_output=True, env=env, timeout=300,
    )


def test_the_runner_refuses_to_start_when_the_plan_does_not_fit(tmp_path):
    serve = ["--serve", "t2v=Wan-AI/Wan2.2-T2V-A14B-Diffusers", "--serve", "i2v=Wan-AI/Wan2.2-I2V-A14B-Diffusers"]
    refused = start(*serve, "--gpu-memory", "79")
    assert refused.returncode == 2 and refused.stdout == b"", "no ready line"
    err = refused.stderr.decode()
    assert "refusing to start: --wan-offload none needs ~" in err and "--wan-fp8" in err, err[-2000:]
    ok = start(*serve, "--gpu-memory", "79", "--fp8")
    assert ok.returncode == 0 and json.loads(ok.stdout.splitlines()[0])["type"] == "ready", ok.stderr.decode()[-2000:]
