"""The memory plan of Wan 2.2 A14B, computed without the weights, and the start-up fit check.

Weights: the published configurations (Wan-AI/Wan2.2-T2V-A14B-Diffusers and -I2V-, as
written by diffusers' ``scripts/convert_wan_to_diffusers.py``; the text encoder is
``google/umt5-xxl``; the VAE is ``AutoencoderKLWan()``'s defaults) are instantiated on the
``meta`` device (no memory), cast the way the runner loads them (transformers and text
encoder in the compute dtype with diffusers' ``_keep_in_fp32_modules`` in float32, the
VAE in float32; with FP8, diffusers' own ``enable_layerwise_casting`` run on the meta
model) and their parameters and buffers summed.

Activations: one transformer forward, the VAE decode (and the i2v VAE encode) and the
text encoder are run on ``meta`` tensors under a dispatch mode that adds every new
tensor's storage when it is made and subtracts it when it is freed; the peak of that is
the activation peak of the phase. Attention is counted as a fused (flash or
memory-efficient) kernel: its output and its log-sum-exp, never the full score matrix,
which is what PyTorch's SDPA runs on CUDA. The results for the published A14B at
832x480x81 and 1280x720x81 are stored in :data:`ACTIVATIONS` (the tiled VAE traces take
minutes); ``python -m pipelet_wan.memory --trace`` recomputes them and the tests
re-trace the quick ones.

Plan: which components sit on the GPU in each phase of a job (all of them without
offload; with ``enable_model_cpu_offload``, the one running plus what its hooks leave
behind; with sequential offload, one layer's weights), plus that phase's activations,
plus :data:`MARGIN_FRACTION` and :data:`WORKSPACE_BYTES` for the allocator's rounding and
the cuBLAS/cuDNN workspaces that a meta trace cannot see. ``python -m pipelet_wan.memory
--markdown`` prints the table in the README.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import weakref
from dataclasses import dataclass, field

log = logging.getLogger("pipelet_wan")

GIB = 1 << 30
# What a trace of tensors cannot see: the caching allocator's block rounding and
# fragmentation, and cuBLAS/cuDNN workspaces. The CUDA context itself is already outside
# the free memory the check compares with.
MARGIN_FRACTION = 0.05
WORKSPACE_BYTES = 1 * GIB
# The largest job pipelet sends: 720p (1280x720 or 720x1280), 5 s at 16 fps.
CHECK_SIZE = (1280, 720, 81)
SIZES = ((832, 480, 81), (1280, 720, 81))
# Free memory of the usual cards once the CUDA context is up: an H100 80GB reports 79.2
# GiB, an H200 about 139.8 GiB; the context takes about half a GiB.
H100_FREE = int(78.5 * GIB)
H200_FREE = int(139.0 * GIB)

# The published A14B transformer (both experts; i2v has 36 input channels: latents, mask
# and the encoded image).
_A14B_TRANSFORMER = {
    "_class_name": "WanTransformer3DModel",
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 13824,
    "freq_dim": 256,
    "image_dim": None,
    "in_channels": 16,
    "num_attention_heads": 40,
    "num_layers": 40,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "pos_embed_seq_len": None,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}
# google/umt5-xxl, whose encoder the Diffusers repos ship in bfloat16.
_UMT5_XXL = {
    "architectures": ["UMT5EncoderModel"],
    "d_ff": 10240,
    "d_kv": 64,
    "d_model": 4096,
    "dense_act_fn": "gelu_new",
    "feed_forward_proj": "gated-gelu",
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "umt5",
    "num_decoder_layers": 24,
    "num_heads": 64,
    "num_layers": 24,
    "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32,
    "tie_word_embeddings": False,
    "vocab_size": 256384,
}
# AutoencoderKLWan's defaults are the Wan 2.1 VAE that both A14B models use.
_WAN_VAE = {
    "_class_name": "AutoencoderKLWan",
    "attn_scales": [],
    "base_dim": 96,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "z_dim": 16,
}
PUBLISHED = {
    "t2v": {
        "repo": "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        "boundary_ratio": 0.875,
        "transformer": _A14B_TRANSFORMER,
        "transformer_2": _A14B_TRANSFORMER,
        "text_encoder": _UMT5_XXL,
        "vae": _WAN_VAE,
    },
    "i2v": {
        "repo": "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        "boundary_ratio": 0.9,
        "transformer": dict(_A14B_TRANSFORMER, in_channels=36),
        "transformer_2": dict(_A14B_TRANSFORMER, in_channels=36),
        "text_encoder": _UMT5_XXL,
        "vae": _WAN_VAE,
    },
}
COMPONENTS = ("text_encoder", "transformer", "transformer_2", "vae")

# Activation peaks (bytes) of the published A14B, from trace_activations() with torch
# 2.15 / diffusers 0.42.1 (`python -m pipelet_wan.memory --trace` prints this). Keys:
# (width, height, frames) → phase → bytes. The transformer runs in bfloat16, the VAE in
# float32, as the runner does on CUDA.
ACTIVATIONS: dict[tuple[int, int, int], dict[str, int]] = {
    (832, 480, 81): {"text_encoder": 100667392, "transformer": 3753772804, "vae_decode": 8175363072, "vae_encode": 6027604992, "vae_decode_tiled": 1821874176, "vae_encode_tiled": 1334821888},
    (1280, 720, 81): {"text_encoder": 100667392, "transformer": 8646443524, "vae_decode": 18861474816, "vae_encode": 13905110016, "vae_decode_tiled": 4199731200, "vae_encode_tiled": 1872028672},
}


def is_a14b(transformer_config: dict) -> bool:
    """Whether a transformer config has the published A14B dimensions."""
    keys = ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "text_dim")
    return all(transformer_config.get(k) == _A14B_TRANSFORMER[k] for k in keys)


# --- building on the meta device -------------------------------------------------------


def build_meta(component: str, config: dict):
    """``component`` of a Wan 2.2 pipeline from its config, on the meta device."""
    import torch

    config = {k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"}
    with torch.device("meta"):
        if component in ("transformer", "transformer_2"):
            from diffusers import WanTransformer3DModel

            return WanTransformer3DModel.from_config(config).eval()
        if component == "vae":
            from diffusers import AutoencoderKLWan

            return AutoencoderKLWan.from_config(config).eval()
        if component == "text_encoder":
            from transformers import UMT5Config, UMT5EncoderModel

            known = {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures", "transformers_version", "torch_dtype", "dtype")}
            return UMT5EncoderModel(UMT5Config(**known)).eval()
    raise ValueError(f"unknown component {component!r}")


def cast_like_the_runner(model, component: str, dtype):
    """Cast a model as ``Pipelines`` loads it: the VAE in float32; the others in ``dtype``
    except diffusers' ``_keep_in_fp32_modules``, matched per segment of the parameter name
    (``blocks.0.scale_shift_table``) as diffusers' loader does."""
    import torch

    if component == "vae":
        dtype = torch.float32
    keep = list(getattr(model, "_keep_in_fp32_modules", None) or []) if dtype in (torch.float16, torch.bfloat16) else []
    if component == "text_encoder" and dtype != torch.float16:
        keep = []  # transformers keeps UMT5's `wo` in float32 only for float16
    # Tensor by tensor (not Module.to, which warns about those modules on every call).
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point():
            want = torch.float32 if any(k in name.split(".") for k in keep) else dtype
            if tensor.dtype != want:
                tensor.data = tensor.data.to(want)
    return model


@dataclass
class ComponentBytes:
    """One component's memory as placed: all of it, its largest layer, and the largest
    layer FP8 storage upcasts at once (0 without FP8)."""

    total: int
    largest_layer: int
    upcast: int = 0


def _tensor_bytes(t) -> int:
    return t.numel() * t.element_size()


def component_bytes(model, fp8_compute=None) -> ComponentBytes:
    """Sum the parameters and buffers of a cast meta ``model``; with ``fp8_compute`` (a
    dtype) apply diffusers' layerwise casting first, as ``--fp8`` does."""
    import torch

    upcast = 0
    if fp8_compute is not None:
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=fp8_compute)
        for module in model.modules():
            own = [p for p in module.parameters(recurse=False) if p.dtype == torch.float8_e4m3fn]
            upcast = max(upcast, sum(p.numel() for p in own) * torch.tensor([], dtype=fp8_compute).element_size())
    total = sum(_tensor_bytes(p) for p in model.parameters()) + sum(_tensor_bytes(b) for b in model.buffers())
    largest = max(
        (sum(_tensor_bytes(p) for p in m.parameters(recurse=False)) + sum(_tensor_bytes(b) for b in m.buffers(recurse=False)) for m in model.modules()),
        default=0,
    )
    return ComponentBytes(total=total, largest_layer=largest, upcast=upcast)


def weights(configs: dict, dtype: str = "bfloat16", fp8: bool = False) -> dict[str, ComponentBytes]:
    """Bytes of each component of one pipeline (``configs`` as in :data:`PUBLISHED`)."""
    from .pipelines import torch_dtype

    td = torch_dtype(dtype)
    out = {}
    for component in COMPONENTS:
        model = cast_like_the_runner(build_meta(component, configs[component]), component, td)
        transformer = component.startswith("transformer")
        out[component] = component_bytes(model, td if (fp8 and transformer) else None)
        del model
    return out


def parameter_counts(configs: dict) -> dict[str, int]:
    """Parameters of each component."""
    return {c: sum(p.numel() for p in build_meta(c, configs[c]).parameters()) for c in COMPONENTS}


# --- tracing activations on meta tensors -----------------------------------------------


class _Tracker:
    """Live and peak bytes of the tensors made while it is active (storages, not views)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._count(out)
                return out

        self.mode = Mode()
        self.live = 0
        self.peak = 0
        self._seen = weakref.WeakSet()

    def _count(self, out):
        import torch
        from torch.utils._pytree import tree_flatten

        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage in self._seen:
                    continue
                self._seen.add(storage)
                n = storage.nbytes()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, n)

    def _free(self, n: int):
        self.live -= n

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def _fused_attention(query, key, value, *args, **kwargs):
    """What a flash/memory-efficient SDPA kernel allocates: its output and log-sum-exp."""
    import torch

    lse = torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)
    out = torch.empty(query.shape[:-1] + (value.shape[-1],), dtype=query.dtype, device=query.device)
    del lse
    return out


def _traced(fn) -> int:
    """Peak bytes of the tensors ``fn`` makes, with fused attention, without autograd."""
    import torch
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _fused_attention
    try:
        with torch.inference_mode(), _Tracker() as tracker:
            fn()
        return tracker.peak
    finally:
        F.scaled_dot_product_attention = original


def latent_shape(width: int, height: int, frames: int, z_dim: int = 16) -> tuple:
    """The latents of a ``width``x``height``, ``frames``-frame video (VAE: /8 in space, /4 in time)."""
    return (1, z_dim, (frames - 1) // 4 + 1, height // 8, width // 8)


PHASES = ("text_encoder", "transformer", "vae_decode", "vae_encode", "vae_decode_tiled", "vae_encode_tiled")


def trace_activations(configs: dict, width: int, height: int, frames: int, *, phases=PHASES, dtype: str = "bfloat16") -> dict[str, int]:
    """Activation peaks of ``phases`` of a job (bytes), traced on meta tensors (the tiled
    VAE phases take a minute or more each)."""
    import torch

    from .pipelines import torch_dtype

    td = torch_dtype(dtype)
    lat = latent_shape(width, height, frames)
    out: dict[str, int] = {}

    if "text_encoder" in phases:
        te = cast_like_the_runner(build_meta("text_encoder", configs["text_encoder"]), "text_encoder", td)

        def text():
            # No attention mask: building one inspects its values, which meta tensors lack
            # (it adds a 512x512 mask, nothing next to the position bias).
            te(torch.zeros((1, 512), dtype=torch.long, device="meta")).last_hidden_state

        out["text_encoder"] = _traced(text)
        del te

    if "transformer" in phases:
        tr = cast_like_the_runner(build_meta("transformer", configs["transformer"]), "transformer", td)
        in_channels = tr.config.in_channels

        def denoise():
            latents = torch.empty(lat, dtype=torch.float32, device="meta")
            x = latents.to(td)
            if in_channels > lat[1]:  # i2v: the mask and the encoded image ride along
                x = torch.cat([x, torch.empty((1, in_channels - lat[1]) + lat[2:], dtype=td, device="meta")], dim=1)
            prompt = torch.empty((1, 512, configs["transformer"]["text_dim"]), dtype=td, device="meta")
            noise = tr(hidden_states=x, timestep=torch.empty((1,), device="meta"), encoder_hidden_states=prompt, return_dict=False)[0]
            latents + noise.float()  # the scheduler step

        out["transformer"] = _traced(denoise)
        del tr

    vae = cast_like_the_runner(build_meta("vae", configs["vae"]), "vae", td)

    def decode():
        vae.decode(torch.empty(lat, dtype=torch.float32, device="meta"), return_dict=False)[0]

    def encode():
        vae.encode(torch.empty((1, 3, frames, height, width), dtype=torch.float32, device="meta")).latent_dist.mode()

    for phase, fn, tiled in (("vae_decode", decode, False), ("vae_encode", encode, False), ("vae_decode_tiled", decode, True), ("vae_encode_tiled", encode, True)):
        if phase in phases:
            if tiled:
                vae.enable_tiling()
            else:
                vae.disable_tiling()
            out[phase] = _traced(fn)
    return out


# --- the plan -----------------------------------------------------------------------------


@dataclass
class Plan:
    """GPU peak and host RAM of one pipeline with one set of options at one size."""

    gpu: int
    host: int
    phases: list[tuple[str, int]] = field(default_factory=list)

    @property
    def needed(self) -> int:
        """GPU memory to ask for: the peak plus the allocator margin and workspaces."""
        return needs(self.gpu)


def needs(peak: int) -> int:
    """GPU memory to ask for a traced ``peak``: plus :data:`MARGIN_FRACTION` and :data:`WORKSPACE_BYTES`."""
    return int(peak * (1 + MARGIN_FRACTION)) + WORKSPACE_BYTES


def _calls(pipeline: str, vae_tiling: bool, acts: dict) -> list[tuple[str, str]]:
    """(component, activation phase) in the order a job runs them (a tiled phase not traced
    counts as the whole one: an upper bound)."""
    decode = "vae_decode_tiled" if vae_tiling and "vae_decode_tiled" in acts else "vae_decode"
    encode = "vae_encode_tiled" if vae_tiling and "vae_encode_tiled" in acts else "vae_encode"
    calls = [("text_encoder", "text_encoder")]
    if pipeline == "i2v":
        calls.append(("vae", encode))
    return calls + [("transformer", "transformer"), ("transformer_2", "transformer"), ("vae", decode)]


def plan(pipeline: str, w: dict[str, ComponentBytes], acts: dict[str, int], *, offload: str = "none", vae_tiling: bool = False) -> Plan:
    """The GPU peak of ``pipeline`` (weights ``w``, activations ``acts``) with ``offload``."""
    total = sum(c.total for c in w.values())
    phases = []
    if offload == "none":
        for comp, phase in _calls(pipeline, vae_tiling, acts):
            phases.append((phase, total + w[comp].upcast + acts[phase]))
        host = 0
    elif offload == "model":
        # enable_model_cpu_offload: a component moves to the GPU when it runs, and its hook
        # sends the one before it in the sequence back to the CPU.
        seq = list(COMPONENTS)
        on_gpu: set[str] = set()
        for comp, phase in _calls(pipeline, vae_tiling, acts):
            on_gpu.add(comp)
            i = seq.index(comp)
            if i > 0:
                on_gpu.discard(seq[i - 1])
            phases.append((phase, sum(w[c].total for c in on_gpu) + w[comp].upcast + acts[phase]))
        host = total
    elif offload == "sequential":
        for comp, phase in _calls(pipeline, vae_tiling, acts):
            phases.append((phase, w[comp].largest_layer + w[comp].upcast + acts[phase]))
        host = total
    else:
        raise ValueError(f"unknown offload {offload!r}")
    return Plan(gpu=max(b for _, b in phases), host=host, phases=phases)


def activations_for(configs: dict, size: tuple[int, int, int]) -> dict[str, int]:
    """Stored activation peaks for ``size`` (those of the published A14B; an upper bound
    for smaller models), traced now for a size not stored."""
    if size in ACTIVATIONS:
        return ACTIVATIONS[size]
    # Another size: trace it now (seconds), without the tiled VAE phases (minutes).
    published = PUBLISHED["i2v" if configs["transformer"].get("in_channels", 16) > 16 else "t2v"]
    return trace_activations(published, *size, phases=("text_encoder", "transformer", "vae_decode", "vae_encode"))


@dataclass
class Setup:
    """The options that decide memory (the runner's flags)."""

    offload: str = "none"
    fp8: bool = False
    vae_tiling: bool = False
    dtype: str = "bfloat16"
    max_loaded: int = 1

    def flags(self) -> str:
        parts = [f"--wan-offload {self.offload}"]
        if self.fp8:
            parts.append("--wan-fp8")
        if self.vae_tiling:
            parts.append("--wan-vae-tiling")
        if self.max_loaded > 1:
            parts.append(f"--wan-max-loaded {self.max_loaded}")
        return " ".join(parts)


_WEIGHTS_CACHE: dict[tuple, dict[str, ComponentBytes]] = {}


def _weights_cached(configs: dict, dtype: str, fp8: bool) -> dict[str, ComponentBytes]:
    key = (json.dumps({c: configs[c] for c in COMPONENTS}, sort_keys=True), dtype, fp8)
    if key not in _WEIGHTS_CACHE:
        _WEIGHTS_CACHE[key] = weights(configs, dtype, fp8)
    return _WEIGHTS_CACHE[key]


def needed(pipelines: dict[str, dict], setup: Setup, size: tuple[int, int, int] = CHECK_SIZE) -> tuple[int, str]:
    """GPU memory the worker needs for its pipelines (``name → configs``), and a one-line
    account of it."""
    plans = {}
    for name, configs in pipelines.items():
        w = _weights_cached(configs, setup.dtype, setup.fp8)
        plans[name] = (plan(name, w, activations_for(configs, size), offload=setup.offload, vae_tiling=setup.vae_tiling), w)
    worst = max(plans, key=lambda n: plans[n][0].needed)
    need = plans[worst][0].needed
    detail = f"{worst} at {size[0]}x{size[1]}, {size[2]} frames"
    if setup.offload == "none" and setup.max_loaded > 1 and len(plans) > 1:
        # The other resident pipeline's weights stay on the GPU too.
        others = sorted((sum(c.total for c in w.values()) for n, (_, w) in plans.items() if n != worst), reverse=True)
        extra = sum(others[: setup.max_loaded - 1])
        need += extra
        detail += f", plus {extra / GIB:.1f} GiB for the other resident pipeline"
    return need, detail


def check_fit(pipelines: dict[str, dict], setup: Setup, gpu_free: int, device: str = "the GPU", size: tuple[int, int, int] = CHECK_SIZE) -> str | None:
    """``None`` if ``setup`` fits ``gpu_free`` bytes, else a message that says what does."""
    need, detail = needed(pipelines, setup, size)
    if need <= gpu_free:
        return None
    fitting = []
    for alt in _alternatives(setup):
        alt_need, _ = needed(pipelines, alt, size)
        if alt_need <= gpu_free:
            fitting.append(f"{alt.flags()} (~{alt_need / GIB:.0f} GiB)")
    advice = ("; these fit: " + ", ".join(fitting[:4])) if fitting else "; no combination of --wan-offload, --wan-fp8 and --wan-vae-tiling fits this GPU"
    return (
        f"{setup.flags()} needs ~{need / GIB:.1f} GiB of GPU memory ({detail}; weights, activations, "
        f"{MARGIN_FRACTION:.0%} + {WORKSPACE_BYTES / GIB:.0f} GiB margin), but {device} has {gpu_free / GIB:.1f} GiB free"
        f"{advice}. Pass --wan-skip-memory-check to start anyway."
    )


def _alternatives(setup: Setup) -> list[Setup]:
    """Option sets to suggest, least costly first (speed, then host RAM)."""
    out = []
    for offload in ("none", "model", "sequential"):
        for fp8 in (False, True):
            for tiling in (False, True):
                alt = Setup(offload=offload, fp8=fp8, vae_tiling=tiling, dtype=setup.dtype, max_loaded=setup.max_loaded)
                if alt != setup:
                    out.append(alt)
    return out


# --- configs of a model folder --------------------------------------------------------------


def configs_of(model: str, pipeline: str) -> tuple[dict, str]:
    """The component configs of ``model`` (a diffusers folder, or a hub id in the local
    cache), else the published A14B ones; and where they came from."""
    folder = model if os.path.isdir(model) else _cached_snapshot(model)
    if folder is None:
        return PUBLISHED[pipeline], f"the published {pipeline} A14B sizes (no local config for {model})"
    configs = {}
    for component in COMPONENTS:
        path = os.path.join(folder, component, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                configs[component] = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{model}: cannot read {component}/config.json: {e}") from e
    return configs, folder


def _cached_snapshot(repo_id: str) -> str | None:
    """A hub id's snapshot folder in the local Hugging Face cache, if it has the configs."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "transformer/config.json")
    except Exception:  # an id that is not a valid repo name
        return None
    if isinstance(found, str):
        return os.path.dirname(os.path.dirname(found))
    return None


# --- the table ------------------------------------------------------------------------------


def table_rows(dtype: str = "bfloat16") -> list[dict]:
    """The README table: every option set, for t2v and i2v, at both sizes."""
    rows = []
    for offload in ("none", "model", "sequential"):
        for fp8 in (False, True):
            for tiling in (False, True):
                setup = Setup(offload=offload, fp8=fp8, vae_tiling=tiling, dtype=dtype)
                row = {"setup": setup, "cells": {}}
                for pipeline in ("t2v", "i2v"):
                    w = _weights_cached(PUBLISHED[pipeline], dtype, fp8)
                    for size in SIZES:
                        p = plan(pipeline, w, ACTIVATIONS[size], offload=offload, vae_tiling=tiling)
                        row["cells"][(pipeline, size)] = p
                rows.append(row)
    return rows


def markdown(dtype: str = "bfloat16") -> str:
    """The memory table as Markdown."""
    gib = lambda b: f"{b / GIB:.1f}"  # noqa: E731
    lines = []
    counts = {p: parameter_counts(PUBLISHED[p]) for p in ("t2v", "i2v")}
    lines.append("| component | parameters (t2v / i2v) | bf16 GiB | with FP8 GiB |")
    lines.append("|---|---|---|---|")
    w16 = {p: _weights_cached(PUBLISHED[p], dtype, False) for p in ("t2v", "i2v")}
    w8 = {p: _weights_cached(PUBLISHED[p], dtype, True) for p in ("t2v", "i2v")}
    for c in COMPONENTS:
        lines.append(f"| {c} | {counts['t2v'][c]:,} / {counts['i2v'][c]:,} | {gib(w16['t2v'][c].total)} | {gib(w8['t2v'][c].total)} |")
    lines.append("")
    lines.append("| activation peak, GiB | " + " | ".join(f"{w}x{h}x{f}" for w, h, f in SIZES) + " |")
    lines.append("|---|" + "---|" * len(SIZES))
    for phase in ("text_encoder", "transformer", "vae_decode", "vae_decode_tiled", "vae_encode", "vae_encode_tiled"):
        lines.append(f"| {phase} | " + " | ".join(gib(ACTIVATIONS[s][phase]) for s in SIZES) + " |")
    lines.append("")
    head = "| options | " + " | ".join(f"{p} {w}x{h}" for p in ("t2v", "i2v") for w, h, _ in SIZES) + " | host RAM while serving | H100 80GB | H200 141GB |"
    lines.append(head)
    lines.append("|---" * (len(SIZES) * 2 + 4) + "|")
    for row in table_rows(dtype):
        cells = [row["cells"][(p, s)] for p in ("t2v", "i2v") for s in SIZES]
        worst720 = max(row["cells"][(p, SIZES[-1])].needed for p in ("t2v", "i2v"))
        host = f"{gib(cells[0].host)} GiB" if cells[0].host else "-"
        lines.append(
            f"| `{row['setup'].flags()}` | "
            + " | ".join(gib(c.needed) for c in cells)
            + f" | {host} | {'fits' if worst720 <= H100_FREE else 'no'} | {'fits' if worst720 <= H200_FREE else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelet_wan.memory [--trace | --markdown]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m pipelet_wan.memory", description=__doc__.splitlines()[0])
    p.add_argument("--trace", action="store_true", help="trace the activations of the published A14B (minutes) and print ACTIVATIONS")
    p.add_argument("--markdown", action="store_true", help="print the README's memory table")
    args = p.parse_args(argv)
    if args.trace:
        result = {}
        for size in SIZES:
            # i2v's transformer takes 36 input channels instead of 16; keep the larger peak.
            acts = trace_activations(PUBLISHED["t2v"], *size)
            acts["transformer"] = max(acts["transformer"], trace_activations(PUBLISHED["i2v"], *size, phases=("transformer",))["transformer"])
            result[size] = acts
            print(size, {k: f"{v / GIB:.2f} GiB" for k, v in acts.items()}, file=sys.stderr, flush=True)
        print("ACTIVATIONS = {")
        for size, acts in result.items():
            print(f"    {size}: {json.dumps(acts)},")
        print("}")
    if args.markdown or not args.trace:
        print(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
