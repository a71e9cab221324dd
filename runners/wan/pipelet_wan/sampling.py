"""How the denoising steps are sampled: the Wan2.2-Lightning recipe when LoRAs are loaded.

The Lightning 4-step distillation was trained on the timesteps [1000, 937.5, 833.33, 625]
(ModelTC/LightX2V-Wan2.2-Lightning issue #3): flow-matching Euler with shift 5 over
linearly spaced sigmas, ``sigma' = 5σ / (1 + 4σ)`` for σ in 1, 0.75, 0.5, 0.25 (then 0),
with guidance 1.0 for both experts (ModelTC/Wan2.2-Lightning ``wan/configs``:
``sample_shift`` 5.0, ``sample_guide_scale`` (1.0, 1.0), solver ``euler``). diffusers'
default for these checkpoints is UniPC with the checkpoint's ``flow_shift`` (3.0), which
samples other timesteps; users report poor videos when the shift is wrong (diffusers
#12094). :class:`LightningScheduler` reproduces the reference ``EulerScheduler`` for any
step count, so 8 steps (``higher_quality_with_more_steps``) run the same recipe on a finer
grid.

The experts switch where the pipeline's ``boundary_ratio`` says (0.875 t2v, 0.9 i2v):
``transformer`` (high noise) while ``t >= boundary · 1000``, ``transformer_2`` after.
"""

from __future__ import annotations

import numpy as np

LIGHTNING_SHIFT = 5.0
TRAIN_TIMESTEPS = 1000


def lightning_sigmas(steps: int) -> list[float]:
    """The unshifted sigmas of the Lightning recipe: ``linspace(1, 0, steps + 1)`` without the final 0."""
    return np.linspace(1.0, 0.0, steps + 1, dtype=np.float32)[:-1].tolist()


def lightning_timesteps(steps: int) -> list[float]:
    """The timesteps the recipe samples (``[1000, 937.5, 833.33, 625]`` for 4 steps)."""
    s = np.asarray(lightning_sigmas(steps), dtype=np.float64)
    return (TRAIN_TIMESTEPS * LIGHTNING_SHIFT * s / (1 + (LIGHTNING_SHIFT - 1) * s)).tolist()


def experts_for(timesteps, boundary_ratio: float) -> list[str]:
    """Which expert runs each step: ``high`` (``transformer``) or ``low`` (``transformer_2``)."""
    boundary = boundary_ratio * TRAIN_TIMESTEPS
    return ["high" if float(t) >= boundary else "low" for t in timesteps]


def lightning_scheduler():
    """A :class:`LightningScheduler` with the published settings."""
    return _scheduler_class()(num_train_timesteps=TRAIN_TIMESTEPS, shift=LIGHTNING_SHIFT)


_CLASS = None


def _scheduler_class():
    """Defines the scheduler class on first use (diffusers is imported lazily)."""
    global _CLASS
    if _CLASS is None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        class LightningScheduler(FlowMatchEulerDiscreteScheduler):
            """Flow-matching Euler on the Lightning grid: ``set_timesteps(n)`` uses
            :func:`lightning_sigmas` (then the shift), whatever the pipeline asks."""

            def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
                if sigmas is None and timesteps is None and num_inference_steps:
                    sigmas = lightning_sigmas(num_inference_steps)
                super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps)

        _CLASS = LightningScheduler
    return _CLASS


def describe(pipe, steps: int) -> dict:
    """The sampling a job of ``steps`` steps gets from ``pipe`` as configured: scheduler,
    shift, timesteps and the expert of each step (for logs and tests)."""
    import copy

    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = [float(t) for t in scheduler.timesteps]
    ratio = pipe.config.get("boundary_ratio") or 0.0
    shift = scheduler.config.get("shift", scheduler.config.get("flow_shift"))
    return {
        "scheduler": type(scheduler).__name__,
        "shift": shift,
        "timesteps": timesteps,
        "experts": experts_for(timesteps, ratio) if ratio else ["high"] * len(timesteps),
    }
