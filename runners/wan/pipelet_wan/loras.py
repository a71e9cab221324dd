"""LoRA files merged into a Wan 2.2 expert by the runner itself (no peft adapters).

The Wan2.2-Lightning releases are safetensors files in the original Wan key layout (not
diffusers'), one per expert. Published variants, all handled here:

- ``lightx2v/Wan2.2-Lightning`` (Seko V1/V1.1, 250928) and Kijai's fp16/bf16 repacks:
  ``diffusion_model.blocks.N.{self_attn,cross_attn}.{q,k,v,o}`` and ``ffn.{0,2}``, each with
  ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha`` (the reference loader,
  ModelTC/Wan2.2-Lightning ``load_and_merge_lora_weight``, adds ``alpha/rank · up @ down``).
- ``lightx2v/Wan2.2-Distill-Loras`` and the lightx2v step-distill LoRAs: the same with
  ``.diff_b`` (a bias delta), ``.diff`` (a whole-weight delta: norms, ``head.head``),
  LoRAs on ``text_embedding``/``time_embedding``/``time_projection``, sometimes
  ``lora_A``/``lora_B`` instead of ``lora_down``/``lora_up``, and in i2v files Wan 2.1
  image-attention keys (``k_img``, ``v_img``, ``norm_k_img``, ``img_emb``) for layers Wan
  2.2 does not have.
- diffusers/peft files (``transformer.blocks.N.attn1.to_q.lora_A.weight``).

diffusers 0.42's converter (``_convert_non_diffusers_wan_lora_to_diffusers``) drops
``.diff`` keys on weights other than ``head.head`` (an info log, no error), drops norm
``.diff``s (assuming zeros), drops the Wan 2.1 image keys without a word, and only converts
files whose keys start with ``diffusion_model.``. This module converts every layout above
itself, so what the file says is what is merged: ``W += scale · (alpha/rank · up @ down +
diff)`` and ``b += scale · diff_b``, computed in float32 and stored in the weight's dtype.
Keys for the Wan 2.1-only image layers are skipped with a warning (as the reference loaders
do); any other key that matches nothing, or a shape that does not fit, fails the load.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger("pipelet_wan")

# Original Wan module names → diffusers' WanTransformer3DModel (the renames of diffusers'
# scripts/convert_wan_to_diffusers.py). Applied to the part after ``blocks.N.`` for block
# keys, to the whole path otherwise.
_BLOCK_RENAMES = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    # The original calls its norms norm1, norm3 (cross-attention, affine), norm2; diffusers
    # numbers them in order. Only the affine one has weights.
    "norm3": "norm2",
    "norm1": "norm1",
    "norm2": "norm3",
    "modulation": "scale_shift_table",
}
_TOP_RENAMES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
}
# Wan 2.1 I2V layers (CLIP image conditioning) that Wan 2.2 A14B does not have: LoRAs
# extracted from Wan 2.1-based distillations carry them; they are skipped, not merged.
_WAN21_ONLY = re.compile(r"(^|\.)(k_img|v_img|norm_k_img|img_emb)(\.|$)")

# Key suffixes → what the tensor is.
_SUFFIXES = (
    (".lora_down.weight", "down"),
    (".lora_A.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_B.weight", "up"),
    (".lora_B.bias", "diff_b"),
    (".alpha", "alpha"),
    (".diff_b", "diff_b"),
    (".diff", "diff"),
)
_PREFIXES = ("diffusion_model.", "model.diffusion_model.", "transformer.", "base_model.model.")


class LoraError(ValueError):
    """A LoRA file that cannot be merged into this model (the load fails as bad weights)."""


@dataclass
class _Target:
    """What one module path of the file contributes."""

    down: object = None
    up: object = None
    alpha: float | None = None
    diff: object = None
    diff_b: object = None
    keys: list = field(default_factory=list)


@dataclass
class MergeReport:
    """What a merge changed: tensors updated, and keys skipped (Wan 2.1-only layers)."""

    path: str
    layout: str
    updated: int
    skipped: list[str]


def read_state(path: str) -> dict:
    """The tensors of a ``.safetensors`` LoRA file (on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise LoraError(f"LoRA file {path} is not a readable safetensors file: {e}") from e


def detect_layout(keys) -> str:
    """``"wan"`` (original Wan names) or ``"diffusers"``; raises on a mix or neither."""
    wan = diffusers = 0
    for key in keys:
        name = _strip_prefix(key)[1]
        if key.startswith(("diffusion_model.", "model.diffusion_model.")) or re.search(
            r"(self_attn|cross_attn|ffn\.[02]|head\.head|text_embedding|time_embedding|time_projection|modulation|img_emb)", name
        ):
            wan += 1
        elif key.startswith("transformer.") or re.search(r"(attn1|attn2|ffn\.net|proj_out|condition_embedder|scale_shift_table)", name):
            diffusers += 1
    if wan and not diffusers:
        return "wan"
    if diffusers and not wan:
        return "diffusers"
    raise LoraError(
        f"cannot tell the key layout ({wan} keys look like original Wan names, {diffusers} like diffusers'); "
        "expected the Wan2.2-Lightning layout (diffusion_model.blocks.N.self_attn.q.lora_down.weight, ...)"
    )


def _strip_prefix(key: str) -> tuple[str, str]:
    """(the prefix, the rest) of a key."""
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return prefix, key[len(prefix) :]
    return "", key


def _split(key: str) -> tuple[str, str]:
    """(module path, kind) of a key, e.g. ``blocks.0.self_attn.q``, ``down``."""
    name = _strip_prefix(key)[1]
    for suffix, kind in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    raise LoraError(f"key {key!r} is not a LoRA key (expected .lora_down/.lora_up/.lora_A/.lora_B .weight, .alpha, .diff or .diff_b)")


def to_diffusers_path(path: str, layout: str) -> str:
    """A module path of the file in diffusers' names (``blocks.0.self_attn.q`` → ``blocks.0.attn1.to_q``)."""
    if layout == "diffusers":
        return path
    m = re.match(r"^blocks\.(\d+)\.(.+)$", path)
    if m:
        rest = _BLOCK_RENAMES.get(m.group(2))
        if rest is None:
            raise LoraError(f"unknown Wan block layer {m.group(2)!r} in {path!r}")
        return f"blocks.{m.group(1)}.{rest}"
    rest = _TOP_RENAMES.get(path)
    if rest is None:
        raise LoraError(f"unknown Wan layer {path!r}")
    return rest


def plan(state: dict, layout: str) -> dict[str, _Target]:
    """The file's tensors grouped per module path (in diffusers' names)."""
    targets: dict[str, _Target] = {}
    for key, tensor in state.items():
        path, kind = _split(key)
        target = targets.setdefault(to_diffusers_path(path, layout) if not _WAN21_ONLY.search(path) else "!" + path, _Target())
        target.keys.append(key)
        if kind == "alpha":
            target.alpha = float(tensor.float().reshape(-1)[0].item())
        else:
            setattr(target, kind, tensor)
    return targets


def merge(model, path: str, scale: float = 1.0, compute_device=None) -> MergeReport:
    """Merge the LoRA file at ``path`` into ``model`` (a ``WanTransformer3DModel``) at
    ``scale``. ``compute_device`` (e.g. the GPU while the weights wait on the CPU for
    offloading) does the matrix products; by default, where each weight is."""
    import torch

    state = read_state(path)
    if not state:
        raise LoraError(f"LoRA file {path} holds no tensors")
    try:
        layout = detect_layout(state)
        targets = plan(state, layout)
    except LoraError as e:
        raise LoraError(f"LoRA file {path}: {e}") from None
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    skipped: list[str] = []
    updates: list[tuple[object, object]] = []
    for name, t in targets.items():
        if name.startswith("!"):
            # A Wan 2.1 image-attention layer: use it if this model has one (Wan 2.1 I2V), else skip.
            try:
                name = to_diffusers_path(name[1:], layout)
            except LoraError:
                name = ""
            if name not in modules and name not in params:
                skipped.extend(t.keys)
                continue
        weight, bias = _weight_and_bias(name, modules, params, path)
        if t.down is not None or t.up is not None:
            if t.down is None or t.up is None:
                raise LoraError(f"LoRA file {path}: {name} has only one of its two LoRA matrices ({', '.join(t.keys)})")
            if t.down.dim() != 2 or t.up.dim() != 2 or weight is None or weight.dim() != 2:
                raise LoraError(f"LoRA file {path}: {name} is not a linear layer of this model ({', '.join(t.keys)})")
            rank = t.down.shape[0]
            if t.up.shape[1] != rank or (t.up.shape[0], t.down.shape[1]) != tuple(weight.shape):
                raise LoraError(
                    f"LoRA file {path} does not fit this model: {name} is {tuple(weight.shape)}, "
                    f"the LoRA gives {(t.up.shape[0], t.down.shape[1])} (a LoRA for another model size?)"
                )
            factor = (t.alpha / rank) if t.alpha is not None else 1.0
            updates.append((weight, (factor, t.up, t.down)))
        elif t.alpha is not None and t.diff is None and t.diff_b is None:
            raise LoraError(f"LoRA file {path}: {name} has an alpha but no LoRA matrices")
        if t.diff is not None:
            if weight is None or tuple(t.diff.shape) != tuple(weight.shape):
                if weight is None and not t.diff.any():
                    skipped.extend(k for k in t.keys if k.endswith(".diff"))  # a zero delta for a norm without weights
                else:
                    raise LoraError(f"LoRA file {path} does not fit this model: {name}.diff is {tuple(t.diff.shape)}, the weight is {None if weight is None else tuple(weight.shape)}")
            else:
                updates.append((weight, t.diff))
        if t.diff_b is not None:
            if bias is None or tuple(t.diff_b.shape) != tuple(bias.shape):
                if bias is None and not t.diff_b.any():
                    skipped.extend(k for k in t.keys if k.endswith(("diff_b", "lora_B.bias")))
                else:
                    raise LoraError(f"LoRA file {path} does not fit this model: {name}'s bias delta is {tuple(t.diff_b.shape)}, the bias is {None if bias is None else tuple(bias.shape)}")
            else:
                updates.append((bias, t.diff_b))
    if not updates:
        raise LoraError(f"LoRA file {path}: none of its {len(state)} keys applies to this model")
    # Everything was checked first: a bad file changes nothing. Deltas are made one at a
    # time (all of A14B's at once would be tens of GB in float32).
    with torch.no_grad():
        for tensor, change in updates:
            if isinstance(change, tuple):
                factor, up, down = change
                at = compute_device or tensor.device
                delta = factor * (up.to(at, torch.float32) @ down.to(at, torch.float32))
            else:
                delta = change.to(tensor.device, torch.float32)
            tensor.copy_((tensor.float() + scale * delta.to(tensor.device)).to(tensor.dtype))
            del delta
    if skipped:
        log.warning("LoRA %s: skipped %d keys for layers this model does not have (e.g. %s)", path, len(skipped), skipped[0])
    return MergeReport(path=path, layout=layout, updated=len(updates), skipped=skipped)


def _weight_and_bias(name: str, modules: dict, params: dict, path: str):
    """The weight and bias tensors a module path refers to (a parameter path gives that parameter)."""
    if name in params and name not in modules:
        return params[name].data, None
    module = modules.get(name)
    if module is None:
        raise LoraError(f"LoRA file {path} names {name!r}, which this model does not have (a LoRA for another model?)")
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    return (weight.data if weight is not None else None), (bias.data if bias is not None else None)


def check_keys(keys) -> str:
    """Validate a LoRA file's key names without its tensors; returns the layout."""
    layout = detect_layout(keys)
    for key in keys:
        path, _ = _split(key)
        if not _WAN21_ONLY.search(path):
            to_diffusers_path(path, layout)
    return layout
