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


def test_compiled_blocks_give_the_same_video_and_are_reused_across_jobs(tiny_models):
    import torch._dynamo

    want = Pipelines(Options())
    want.load(Load("t2v", str(tiny_models / "t2v")))
    expected = want.generate(job(), lambda: False, lambda *a: None)
    # The eager backend captures the same graphs as inductor without a C++ toolchain.
    pipes = Pipelines(Options(compile=True, compile_backend="eager"))
    resident = pipes.load(Load("t2v", str(tiny_models / "t2v")))
    for model in (resident.pipe.transformer, resident.pipe.transformer_2):
        assert all(getattr(b, "_compiled_call_impl", None) is not None for b in model.blocks)
    torch._dynamo.utils.counters.clear()
    first = pipes.generate(job(), lambda: False, lambda *a: None)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs > 0, "the blocks were compiled"
    np.testing.assert_allclose(first, expected, atol=1e-5)
    second = pipes.generate(job(seed=4), lambda: False, lambda *a: None)
    assert second.shape == expected.shape
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs, "the second job reuses the compiled graphs"


def test_attention_backends():
    from pipelet_wan.pipelines import attention_backend, flash_attention_available

    assert attention_backend("sdpa", "cuda") == "native"
    assert attention_backend("auto", "cpu") == "native"
    if not flash_attention_available():
        assert attention_backend("auto", "cuda") == "native"
        try:
            attention_backend("flash", "cuda")
        except ValueError as e:
            assert "pip install flash-attn" in str(e)
        else:
            raise AssertionError("flash without flash-attn must be refused")
