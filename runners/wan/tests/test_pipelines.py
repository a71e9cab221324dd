"""The pipeline layer in process: our latent decode matches diffusers', FP8 storage works."""

from __future__ import annotations

import numpy as np
import torch

from pipelet_wan.pipelines import Options, Pipelines
from pipelet_wan.protocol import Generate, Load


def job(**over) -> Generate:
    """A small t2v ``Generate`` with ``over`` applied."""
    fields = dict(
        job_id="j",
        pipeline="t2v",
        prompt="a blue bird flying",
        negative_prompt=None,
        width=64,
        height=48,
        num_frames=5,
        fps=16,
        steps=2,
        guidance=None,
        guidance_2=None,
        seed=3,
        image_path=None,
        output_path="/dev/null",
    )
    fields.update(over)
    return Generate(**fields)


def test_own_decode_matches_the_pipeline_s_decode(tiny_models):
    pipes = Pipelines(Options())
    resident = pipes.load(Load("t2v", str(tiny_models / "t2v")))
    reports = []
    ours = pipes.generate(job(), lambda: False, lambda *a: reports.append(a))
    theirs = resident.pipe(
        prompt="a blue bird flying",
        height=48,
        width=64,
        num_frames=5,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).frames[0]
    assert ours.shape == theirs.shape == (5, 48, 64, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert [r[0] for r in reports] == [0, 1, 2, 3]


def test_loading_the_same_pipeline_twice_is_a_no_op_and_fp8_storage_renders(tiny_models):
    pipes = Pipelines(Options(fp8=True))
    first = pipes.load(Load("t2v", str(tiny_models / "t2v")))
    assert pipes.load(Load("t2v", str(tiny_models / "t2v"))) is first
    frames = pipes.generate(job(), lambda: False, lambda *a: None)
    assert frames.shape == (5, 48, 64, 3) and np.isfinite(frames).all()
