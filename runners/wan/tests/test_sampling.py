"""The sampler a job gets: the published Lightning recipe with LoRAs, the checkpoint's without.

The expert and timestep of every denoising step are recorded from the transformers'
forward calls during a real ``Pipelines.generate``, so the test sees what runs, not what
a helper computes.
"""

from __future__ import annotations

import pytest
from PIL import Image

from pipelet_wan import sampling
from pipelet_wan.pipelines import Options, Pipelines
from pipelet_wan.protocol import Generate, Load, Lora

# ModelTC/LightX2V-Wan2.2-Lightning issue #3: the distillation's training timesteps.
PUBLISHED_4_STEPS = [1000.0, 937.5, 833.3333, 625.0]


def test_the_lightning_grid_is_the_published_one():
    assert sampling.lightning_timesteps(4) == pytest.approx(PUBLISHED_4_STEPS, abs=1e-3)
    scheduler = sampling.lightning_scheduler()
    scheduler.set_timesteps(4)
    assert [float(t) for t in scheduler.timesteps] == pytest.approx(PUBLISHED_4_STEPS, abs=1e-3)
    # Euler ends at sigma 0: the last step lands on the clean sample.
    assert [float(s) for s in scheduler.sigmas] == pytest.approx([1.0, 0.9375, 0.833333, 0.625, 0.0], abs=1e-5)
    assert scheduler.config.shift == 5.0


def run_recorded(pipes: Pipelines, pipeline: str, steps: int, tmp_path, **over) -> list[tuple[str, float]]:
    """(expert, timestep) of every transformer call during one generate."""
    pipe = pipes.resident[pipeline].pipe
    calls: list[tuple[str, float]] = []
    hooks = []
    for expert, model in (("high", pipe.transformer), ("low", pipe.transformer_2)):
        def record(module, args, kwargs, expert=expert):
            calls.append((expert, round(float(kwargs["timestep"].flatten()[0]), 3)))

        hooks.append(model.register_forward_pre_hook(record, with_kwargs=True))
    image = None
    if pipeline == "i2v":
        image = tmp_path / "in.png"
        Image.new("RGB", (32, 32), (10, 200, 30)).save(image)
    fields = dict(
        job_id="s", pipeline=pipeline, prompt="a blue bird", negative_prompt=None, width=32, height=32, num_frames=1,
        fps=16, steps=steps, guidance=None, guidance_2=None, seed=1, image_path=str(image) if image else None, output_path="/dev/null",
    )
    fields.update(over)
    try:
        pipes.generate(Generate(**fields), lambda: False, lambda *a: None)
    finally:
        for h in hooks:
            h.remove()
    return calls


@pytest.mark.parametrize("pipeline", ["t2v", "i2v"])
def test_with_loras_jobs_sample_the_published_recipe(pipeline, tiny_models, tmp_path):
    pipes = Pipelines(Options())
    lora = tiny_models / "lora"
    loras = (Lora(str(lora / "high_noise_model.safetensors"), "high"), Lora(str(lora / "low_noise_model.safetensors"), "low"))
    resident = pipes.load(Load(pipeline, str(tiny_models / pipeline), loras))
    assert resident.pipe.config.boundary_ratio == {"t2v": 0.875, "i2v": 0.9}[pipeline]
    calls = run_recorded(pipes, pipeline, 4, tmp_path)
    # One call per step (guidance 1.0: no unconditional pass), high noise first.
    assert [e for e, _ in calls] == ["high", "high", "low", "low"]
    assert [t for _, t in calls] == pytest.approx(PUBLISHED_4_STEPS, abs=1e-2)
    # higher_quality_with_more_steps: the same recipe on 8 steps.
    calls = run_recorded(pipes, pipeline, 8, tmp_path)
    want = sampling.lightning_timesteps(8)
    assert [t for _, t in calls] == pytest.approx(want, abs=1e-2)
    highs = {"t2v": 4, "i2v": 3}[pipeline]  # 892.9 is above 875 but below 900
    assert [e for e, _ in calls] == ["high"] * highs + ["low"] * (8 - highs)
    described = sampling.describe(resident.pipe, 8)
    assert described["scheduler"] == "LightningScheduler" and described["experts"] == [e for e, _ in calls]


def test_without_loras_jobs_use_the_checkpoint_scheduler_and_guidance(tiny_models, tmp_path):
    pipes = Pipelines(Options())
    resident = pipes.load(Load("t2v", str(tiny_models / "t2v")))
    described = sampling.describe(resident.pipe, 4)
    assert (described["scheduler"], described["shift"]) == ("UniPCMultistepScheduler", 3.0)
    calls = run_recorded(pipes, "t2v", 4, tmp_path)
    # Classifier-free guidance: each step runs its expert twice (with and without the prompt).
    assert [e for e, _ in calls] == [e for e in described["experts"] for _ in range(2)]
    assert [t for _, t in calls][::2] == pytest.approx(described["timesteps"], abs=1e-2)
    assert described["timesteps"] != pytest.approx(PUBLISHED_4_STEPS, abs=1.0)
