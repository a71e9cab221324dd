"""LoRA files in every published Wan2.2-Lightning key layout, loaded through the runner.

Each case writes a high-noise and a low-noise file for the tiny model, loads them with
``Pipelines.load`` (the runner's real code), and checks that the merged weights equal a
manual merge of the same deltas (written here with the diffusers names spelled out, not
with the runner's rename table), that the video equals the one the manually merged
weights give, and that it differs from the video without them. Where diffusers' own
loader handles a layout, its fused weights must agree too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelet_wan.pipelines import Failure, Options, Pipelines
from pipelet_wan.protocol import Generate, Load, Lora
from pipelet_wan.sampling import lightning_scheduler

RANK = 4
# Original Wan linear layers of a block → the tiny model's diffusers names.
BLOCK_LINEARS = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
EMBEDDINGS = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_projection.1": "condition_embedder.time_proj",
}


class Builder:
    """Writes one LoRA file and records the delta each parameter should receive."""

    def __init__(self, base: dict, seed: int, prefix: str = "diffusion_model.", dtype=torch.float32):
        self.base, self.prefix, self.dtype = base, prefix, dtype
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict = {}
        self.delta: dict = {}

    def rand(self, *shape):
        return (0.2 * torch.randn(*shape, generator=self.g)).to(self.dtype)

    def add(self, param: str, delta):
        self.delta[param] = self.delta.get(param, 0) + delta.float()

    def lora(self, orig: str, diffusers: str, alpha=None, down="lora_down", up="lora_up"):
        out, inp = self.base[diffusers + ".weight"].shape
        a, b = self.rand(RANK, inp), self.rand(out, RANK)
        self.state[f"{self.prefix}{orig}.{down}.weight"] = a
        self.state[f"{self.prefix}{orig}.{up}.weight"] = b
        factor = 1.0
        if alpha is not None:
            self.state[f"{self.prefix}{orig}.alpha"] = torch.tensor(float(alpha))
            factor = alpha / RANK
        self.add(diffusers + ".weight", factor * (b.float() @ a.float()))

    def diff(self, orig: str, diffusers_param: str, zero=False):
        d = torch.zeros_like(self.base[diffusers_param]) if zero else self.rand(*self.base[diffusers_param].shape)
        self.state[f"{self.prefix}{orig}.diff"] = d.to(self.dtype)
        self.add(diffusers_param, d)

    def diff_b(self, orig: str, diffusers: str):
        d = self.rand(*self.base[diffusers + ".bias"].shape)
        self.state[f"{self.prefix}{orig}.diff_b"] = d
        self.add(diffusers + ".bias", d)

    def extra(self, key: str, tensor):
        """A key that must not change anything (a layer the model does not have)."""
        self.state[self.prefix + key] = tensor


def lightning(b: Builder, alpha):
    """lightx2v/Wan2.2-Lightning (Seko): lora_down/lora_up/alpha on every block linear."""
    for i in range(2):
        for orig, diff in BLOCK_LINEARS.items():
            b.lora(f"blocks.{i}.{orig}", f"blocks.{i}.{diff}", alpha=alpha)


def distill(b: Builder):
    """lightx2v/Wan2.2-Distill-Loras style: diff_b, zeroed norm diffs, head.head diff,
    embedding LoRAs, and Wan 2.1 image-attention keys a Wan 2.2 model does not have."""
    for i in range(2):
        for orig, diff in BLOCK_LINEARS.items():
            b.lora(f"blocks.{i}.{orig}", f"blocks.{i}.{diff}")
            b.diff_b(f"blocks.{i}.{orig}", f"blocks.{i}.{diff}")
        b.diff(f"blocks.{i}.norm3", f"blocks.{i}.norm2.weight", zero=True)
        b.diff(f"blocks.{i}.self_attn.norm_q", f"blocks.{i}.attn1.norm_q.weight", zero=True)
        b.diff(f"blocks.{i}.cross_attn.norm_k", f"blocks.{i}.attn2.norm_k.weight", zero=True)
        b.extra(f"blocks.{i}.cross_attn.k_img.lora_down.weight", b.rand(RANK, 24))
        b.extra(f"blocks.{i}.cross_attn.k_img.lora_up.weight", b.rand(24, RANK))
        b.extra(f"blocks.{i}.cross_attn.v_img.diff_b", b.rand(24))
        b.extra(f"blocks.{i}.cross_attn.norm_k_img.diff", b.rand(24))
    for orig, diff in EMBEDDINGS.items():
        b.lora(orig, diff)
        b.diff_b(orig, diff)
    b.diff("head.head", "proj_out.weight")
    b.diff_b("head.head", "proj_out")
    b.extra("img_emb.proj.1.lora_down.weight", b.rand(RANK, 32))
    b.extra("img_emb.proj.1.lora_up.weight", b.rand(32, RANK))


def full_diffs(b: Builder):
    """Whole-weight deltas, a non-zero norm delta and a modulation delta (all of which
    diffusers' converter drops)."""
    for i in range(2):
        for orig, diff in BLOCK_LINEARS.items():
            b.diff(f"blocks.{i}.{orig}", f"blocks.{i}.{diff}.weight")
        b.diff(f"blocks.{i}.norm3", f"blocks.{i}.norm2.weight")
        b.diff(f"blocks.{i}.modulation", f"blocks.{i}.scale_shift_table")
    b.diff("head.modulation", "scale_shift_table")


def diffusers_layout(b: Builder):
    """A diffusers/peft file: transformer.blocks.N.attn1.to_q.lora_A.weight."""
    for i in range(2):
        for diff in BLOCK_LINEARS.values():
            b.lora(f"blocks.{i}.{diff}", f"blocks.{i}.{diff}", down="lora_A", up="lora_B")


CASES = {
    # name: (builder, Builder kwargs, diffusers' loader gets the same weights)
    "lightning-seko-fp32-alpha": (lambda b: lightning(b, alpha=8), {}, True),
    "kijai-repack-fp16": (lambda b: lightning(b, alpha=RANK), {"dtype": torch.float16}, True),
    "lora_A-lora_B": (lambda b: [b.lora(f"blocks.{i}.{o}", f"blocks.{i}.{d}", down="lora_A", up="lora_B") for i in range(2) for o, d in BLOCK_LINEARS.items()], {}, True),
    "distill-diff_b-head-diff": (distill, {}, True),
    "whole-weight-diffs": (full_diffs, {}, False),
    "no-prefix": (lambda b: lightning(b, alpha=RANK), {"prefix": ""}, False),
    "diffusers-peft": (diffusers_layout, {"prefix": "transformer."}, False),
}


def job(**over) -> Generate:
    fields = dict(
        job_id="j", pipeline="t2v", prompt="a red fox running", negative_prompt=None, width=32, height=32,
        num_frames=1, fps=16, steps=2, guidance=None, guidance_2=None, seed=7, image_path=None, output_path="/dev/null",
    )
    fields.update(over)
    return Generate(**fields)


@pytest.fixture(scope="module")
def base(tiny_models):
    """The tiny t2v pipeline without LoRAs, on the Lightning sampler at guidance 1.0, and its video."""
    pipes = Pipelines(Options())
    resident = pipes.load(Load("t2v", str(tiny_models / "t2v")))
    resident.pipe.scheduler = lightning_scheduler()
    weights = {
        "high": {k: v.clone() for k, v in resident.pipe.transformer.state_dict().items()},
        "low": {k: v.clone() for k, v in resident.pipe.transformer_2.state_dict().items()},
    }
    video = pipes.generate(job(guidance=1.0, guidance_2=1.0), lambda: False, lambda *a: None)
    return pipes, resident, weights, video


def write_pair(tmp_path, weights, case):
    """The high and low files of ``case``; returns their paths and expected deltas."""
    build, kwargs, _ = CASES[case]
    paths, deltas = {}, {}
    for seed, expert in enumerate(("high", "low")):
        b = Builder(weights[expert], seed=seed + 10, **kwargs)
        build(b)
        paths[expert] = tmp_path / f"{expert}_noise_model.safetensors"
        save_file(b.state, str(paths[expert]))
        deltas[expert] = b.delta
    return paths, deltas


@pytest.mark.parametrize("case", list(CASES))
def test_published_layouts_merge_exactly_and_change_the_video(case, base, tiny_models, tmp_path):
    pipes, resident, weights, before = base
    paths, deltas = write_pair(tmp_path, weights, case)
    scale = 0.5 if case == "lightning-seko-fp32-alpha" else 1.0
    loras = (Lora(str(paths["high"]), "high", scale), Lora(str(paths["low"]), "low", scale))
    runner = Pipelines(Options())
    loaded = runner.load(Load("t2v", str(tiny_models / "t2v"), loras))
    for expert, model in (("high", loaded.pipe.transformer), ("low", loaded.pipe.transformer_2)):
        got = model.state_dict()
        assert deltas[expert], "the case changes something"
        for name, w in weights[expert].items():
            want = w + scale * deltas[expert][name] if name in deltas[expert] else w
            torch.testing.assert_close(got[name], want, rtol=0, atol=1e-6, msg=f"{expert} {name}")
    video = runner.generate(job(), lambda: False, lambda *a: None)
    # The same deltas merged by hand into the LoRA-less pipeline give the same video.
    for expert, model in (("high", resident.pipe.transformer), ("low", resident.pipe.transformer_2)):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(weights[expert][name] + scale * deltas[expert].get(name, 0))
    try:
        manual = pipes.generate(job(guidance=1.0, guidance_2=1.0), lambda: False, lambda *a: None)
    finally:
        with torch.no_grad():
            for expert, model in (("high", resident.pipe.transformer), ("low", resident.pipe.transformer_2)):
                for name, p in model.named_parameters():
                    p.copy_(weights[expert][name])
    np.testing.assert_allclose(video, manual, atol=1e-5)
    assert np.abs(video - before).max() > 1e-3, "the LoRAs changed the video"


@pytest.mark.parametrize("case", [c for c, (_, _, same) in CASES.items() if same])
def test_diffusers_own_loader_agrees_where_it_can_load_the_layout(case, base, tiny_models, tmp_path):
    from diffusers import WanPipeline

    _, _, weights, _ = base
    paths, deltas = write_pair(tmp_path, weights, case)
    pipe = WanPipeline.from_pretrained(str(tiny_models / "t2v"))
    for expert in ("high", "low"):
        pipe.load_lora_weights(str(tmp_path), weight_name=paths[expert].name, adapter_name=expert, load_into_transformer_2=expert == "low")
    pipe.fuse_lora(components=["transformer"], adapter_names=["high"])
    pipe.fuse_lora(components=["transformer_2"], adapter_names=["low"])
    pipe.unload_lora_weights()
    for expert, model in (("high", pipe.transformer), ("low", pipe.transformer_2)):
        got = model.state_dict()
        for name, w in weights[expert].items():
            torch.testing.assert_close(got[name], w + deltas[expert].get(name, 0), rtol=0, atol=1e-5, msg=f"{expert} {name}")


def test_bad_lora_files_fail_the_load_with_a_clear_message(base, tiny_models, tmp_path):
    _, _, weights, _ = base
    pipes = Pipelines(Options())
    model = str(tiny_models / "t2v")

    def load_with(state, name):
        path = tmp_path / name
        save_file(state, str(path))
        with pytest.raises(Failure) as e:
            pipes.load(Load("t2v", model, (Lora(str(path), "high"),)))
        assert e.value.kind == "bad_weights"
        return e.value.message

    big = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 5120), "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(5120, 4)}
    assert "another model size" in load_with(big, "big.safetensors")
    unknown = {"diffusion_model.blocks.0.self_attn.zz.lora_down.weight": torch.zeros(4, 24), "diffusion_model.blocks.0.self_attn.zz.lora_up.weight": torch.zeros(24, 4)}
    assert "self_attn.zz" in load_with(unknown, "unknown.safetensors")
    half = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 24)}
    assert "only one of its two" in load_with(half, "half.safetensors")
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    with pytest.raises(Failure, match="not a readable safetensors"):
        pipes.load(Load("t2v", model, (Lora(str(tmp_path / "text.safetensors"), "low"),)))
