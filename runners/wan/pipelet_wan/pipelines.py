"""The Wan 2.2 pipelines: loading (weights, Lightning LoRAs, memory options) and rendering.

- t2v is diffusers' ``WanPipeline``, i2v its ``WanImageToVideoPipeline``, both with the
  Wan 2.2 A14B layout: a high-noise expert (``transformer``) and a low-noise one
  (``transformer_2``) switched at ``boundary_ratio``.
- LoRAs (the Wan2.2-Lightning 4-step distillation) are merged into their expert's weights
  by :mod:`.loras` (every published key layout, converted here), so they cost nothing per
  step. A pipeline loaded with LoRAs samples with the published Lightning recipe
  (:mod:`.sampling`: Euler, shift 5, guidance 1.0); one without uses the checkpoint's own
  scheduler and the pipeline's default guidance.
- Speed options: FP8 weight storage, VAE tiling, the attention backend (PyTorch SDPA, or
  FlashAttention when installed) and ``torch.compile`` of the transformer blocks, compiled
  once per loaded pipeline and reused by every job.
- Denoising runs with ``output_type="latent"``; this module decodes the latents itself,
  so a cancelled job skips the VAE decode (the pipeline would decode a half-denoised
  video after an interrupt) and decoding is a progress task of its own.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .protocol import Generate, Load

log = logging.getLogger("pipelet_wan")

# Guidance for LoRA-distilled (Lightning) pipelines: no classifier-free guidance.
LORA_GUIDANCE = 1.0


class Failure(Exception):
    """A job or load that failed with one of the protocol's error kinds."""

    def __init__(self, kind: str, message: str, retryable: bool, fatal: bool = False):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.fatal = fatal


class Cancelled(Exception):
    """The job's cancel arrived; nothing was written."""


@dataclass
class Options:
    """How pipelines are placed in memory (the runner's command-line flags)."""

    device: str = "cpu"
    dtype: str = "float32"
    offload: str = "none"  # none | model | sequential
    fp8: bool = False
    vae_tiling: bool = False
    max_loaded: int = 1
    attention: str = "sdpa"  # sdpa | flash | auto
    compile: bool = False
    # torch.compile backend; tests use "eager" (graph capture without a C++ toolchain).
    compile_backend: str = "inductor"


@dataclass
class Resident:
    """A loaded pipeline and what it was loaded from."""

    load: Load
    pipe: object
    seconds: float

    @property
    def has_loras(self) -> bool:
        """Whether LoRAs were fused in (jobs then default to guidance 1.0)."""
        return bool(self.load.loras)


def torch_dtype(name: str):
    """``"bfloat16"`` → ``torch.bfloat16``."""
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` means the accelerator (or the host) ran out of memory."""
    import torch

    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def is_fatal(e: BaseException) -> bool:
    """Whether ``e`` leaves the CUDA context unusable (the process must be restarted)."""
    text = str(e)
    return "CUDA error" in text or "device-side assert" in text or "illegal memory access" in text


def free_memory() -> None:
    """Return cached accelerator memory after a failure or an unload."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Pipelines:
    """The resident pipelines, least recently used first, at most ``options.max_loaded``."""

    def __init__(self, options: Options):
        self.options = options
        self.resident: OrderedDict[str, Resident] = OrderedDict()

    def names(self) -> list[str]:
        """Resident pipelines, least recently used first."""
        return list(self.resident)

    def load(self, cmd: Load) -> Resident:
        """Make ``cmd.pipeline`` resident as described (a no-op if it already is)."""
        current = self.resident.get(cmd.pipeline)
        if current is not None and current.load == cmd:
            self.resident.move_to_end(cmd.pipeline)
            return current
        # Make room first: the old weights must be gone before the new ones arrive.
        if current is not None:
            self._evict(cmd.pipeline)
        while len(self.resident) >= max(1, self.options.max_loaded):
            self._evict(next(iter(self.resident)))
        started = time.monotonic()
        try:
            pipe = self._build(cmd)
        except Exception as e:
            free_memory()
            if is_oom(e):
                raise Failure("oom", f"out of memory loading {cmd.pipeline} from {cmd.model}: {e}", False) from e
            raise Failure("bad_weights", f"cannot load {cmd.pipeline} from {cmd.model}: {type(e).__name__}: {e}", False, is_fatal(e)) from e
        resident = Resident(load=cmd, pipe=pipe, seconds=time.monotonic() - started)
        self.resident[cmd.pipeline] = resident
        return resident

    def _evict(self, name: str) -> None:
        """Drop pipeline ``name`` and give its memory back."""
        log.info("unloading %s", name)
        del self.resident[name]
        free_memory()

    def _build(self, cmd: Load):
        """Load ``cmd`` from disk or the hub and place it per the options."""
        import torch
        from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline

        opts = self.options
        dtype = torch_dtype(opts.dtype)
        cls = WanPipeline if cmd.pipeline == "t2v" else WanImageToVideoPipeline
        log.info("loading %s from %s (%s)", cmd.pipeline, cmd.model, opts.dtype)
        # The Wan VAE is kept in float32, as in diffusers' Wan examples.
        vae = AutoencoderKLWan.from_pretrained(cmd.model, subfolder="vae", dtype=torch.float32)
        pipe = cls.from_pretrained(cmd.model, vae=vae, dtype=dtype)
        if getattr(pipe, "transformer_2", None) is None or pipe.config.boundary_ratio is None:
            raise ValueError("not a Wan 2.2 A14B checkpoint (no transformer_2 / boundary_ratio)")
        if cmd.pipeline == "i2v" and pipe.config.get("expand_timesteps", False):
            raise ValueError("Wan 2.2 TI2V-5B checkpoints (expand_timesteps) are not supported")
        pipe.set_progress_bar_config(disable=True)
        configure(pipe, cmd, opts)
        return pipe

    def generate(self, job: Generate, cancelled: Callable[[], bool], report: Callable[[int, int, str], None]) -> np.ndarray:
        """Denoise and decode ``job``; returns float frames (F, H, W, 3) in [0, 1].

        ``report(done, total, stage)`` is called after every denoising step and after the
        decode. ``cancelled()`` is polled at every step; a cancel interrupts the pipeline
        and raises :class:`Cancelled` before any decode.
        """
        import torch

        resident = self.resident.get(job.pipeline)
        if resident is None:
            raise Failure("invalid", f"pipeline {job.pipeline} is not loaded (send `load` first)", False)
        self.resident.move_to_end(job.pipeline)
        pipe = resident.pipe
        total = job.steps + 2  # denoising steps, VAE decode, encode
        guidance = job.guidance if job.guidance is not None else (LORA_GUIDANCE if resident.has_loras else None)
        guidance_2 = job.guidance_2 if job.guidance_2 is not None else (LORA_GUIDANCE if resident.has_loras else None)

        def on_step_end(p, i, t, kwargs):
            """Report the step; ask the pipeline to stop if the job was cancelled."""
            report(i + 1, p.num_timesteps + 2, "denoise")
            if cancelled():
                p._interrupt = True
            return {}

        kwargs = dict(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            height=job.height,
            width=job.width,
            num_frames=job.num_frames,
            num_inference_steps=job.steps,
            generator=torch.Generator(device="cpu").manual_seed(job.seed),
            output_type="latent",
            callback_on_step_end=on_step_end,
        )
        if guidance is not None:
            kwargs["guidance_scale"] = guidance
        if guidance_2 is not None:
            kwargs["guidance_scale_2"] = guidance_2
        if job.pipeline == "i2v":
            kwargs["image"] = load_image(job.image_path, job.width, job.height)
        report(0, total, "denoise")
        try:
            with torch.inference_mode():
                started = time.monotonic()
                latents = pipe(**kwargs).frames
                if cancelled():
                    raise Cancelled()
                denoised = time.monotonic()
                frames = decode(pipe, latents)
                log.info("job %s: denoised in %.1f s, decoded in %.1f s", job.job_id, denoised - started, time.monotonic() - denoised)
        except (Cancelled, Failure):
            raise
        except Exception as e:
            free_memory()
            raise classify(e, job) from e
        finally:
            pipe.maybe_free_model_hooks()
        report(total - 1, total, "encode")
        return frames


def configure(pipe, cmd: Load, opts: Options) -> None:
    """Merge ``cmd``'s LoRAs, choose the sampler, apply the memory and speed options and
    place ``pipe`` on the device (the one path for loads and for ``bench``)."""
    import torch

    from . import loras, sampling

    cuda = opts.device.startswith("cuda")
    if cuda and opts.offload == "none":
        # Merge on the GPU: a few seconds instead of a minute of CPU matmuls.
        pipe.to(opts.device)
    for lora in cmd.loras:
        if not os.path.isfile(lora.path):
            raise FileNotFoundError(f"LoRA file {lora.path} does not exist")
        expert = pipe.transformer if lora.expert == "high" else pipe.transformer_2
        report = loras.merge(expert, lora.path, lora.scale, compute_device=opts.device if cuda else None)
        log.info("LoRA %s (%s layout) merged into the %s-noise expert: %d tensors", lora.path, report.layout, lora.expert, report.updated)
    if cmd.loras:
        pipe.scheduler = sampling.lightning_scheduler()
    plan = sampling.describe(pipe, 4)
    log.info("%s sampling: %s, shift %s; 4 steps: timesteps %s, experts %s", cmd.pipeline, plan["scheduler"], plan["shift"], [round(t, 2) for t in plan["timesteps"]], plan["experts"])
    dtype = torch_dtype(opts.dtype)
    transformers = [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]
    if opts.fp8:
        # Weights stored in FP8, computed in the pipeline dtype: about half the memory.
        for model in transformers:
            model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    if opts.vae_tiling:
        pipe.vae.enable_tiling()
    backend = attention_backend(opts.attention, opts.device)
    if backend != "native":
        for model in transformers:
            model.set_attention_backend(backend)
    if opts.compile:
        # Regional compilation: the 40 identical blocks share one compiled graph, so it
        # compiles in seconds, once per loaded pipeline; later jobs reuse it (a new video
        # size recompiles once, then dynamic shapes cover the rest).
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        for model in transformers:
            model.compile_repeated_blocks(backend=opts.compile_backend)
    if cuda and opts.offload == "model":
        pipe.enable_model_cpu_offload(device=opts.device)
    elif cuda and opts.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=opts.device)
    else:
        pipe.to(opts.device)


def flash_attention_available() -> bool:
    """Whether the ``flash-attn`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def attention_backend(choice: str, device: str) -> str:
    """The diffusers attention backend for ``--attention``: ``native`` (PyTorch SDPA, which
    picks its own flash/memory-efficient kernel on CUDA) or ``flash`` (the flash-attn
    package). ``auto`` takes FlashAttention on CUDA when it is installed."""
    if choice == "sdpa":
        return "native"
    if choice == "flash":
        if not flash_attention_available():
            raise ValueError("--attention flash needs the flash-attn package (pip install flash-attn), or use --attention sdpa")
        return "flash"
    if choice == "auto":
        return "flash" if device.startswith("cuda") and flash_attention_available() else "native"
    raise ValueError(f"unknown attention backend {choice!r} (sdpa, flash or auto)")


def decode(pipe, latents):
    """The pipelines' own latent decode (diffusers 0.42): denormalise, VAE-decode, to numpy."""
    import torch
    from diffusers.utils.torch_utils import get_module_execution_device

    vae = pipe.vae
    latents = latents.to(device=get_module_execution_device(vae), dtype=vae.dtype)
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
    latents = latents / inv_std + mean
    video = vae.decode(latents, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="np")[0]


def load_image(path: str, width: int, height: int):
    """The job's input image, upright (EXIF orientation applied), RGB, at ``width``x``height``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.LANCZOS)
            return img
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise Failure("invalid", f"cannot read the input image: {e}", False) from e


def classify(e: Exception, job: Generate) -> Failure:
    """Map an exception from a render to the protocol's error kinds."""
    if is_oom(e):
        # The worker adds the size: "out of GPU memory at WxH, N frames: <this>".
        return Failure("oom", str(e), False)
    if isinstance(e, (ValueError, TypeError)) and not is_fatal(e):
        return Failure("invalid", f"{type(e).__name__}: {e}", False)
    return Failure("internal", f"{type(e).__name__}: {e}", True, is_fatal(e))
