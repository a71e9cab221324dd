"""Seconds per step, per video and peak GPU memory of the full-size A14B, with random weights.

``python -m pipelet_wan.bench --out results.md`` (``scripts/gpu-check.sh`` runs it) builds
the published Wan 2.2 A14B t2v architecture (two 14B experts, the UMT5-XXL text encoder,
the VAE; :data:`memory.PUBLISHED`) directly on the GPU with random weights, so no
download is needed, and renders jobs through the runner's own code (``configure`` and
``Pipelines.generate``: Lightning sampler, guidance 1.0, the runner's VAE decode and MP4
writer) at 832x480x81 and 1280x720x81, in bf16 and then with FP8 weight storage. For each
it records the text encoder's time, the seconds per step of each expert, the VAE decode,
the MP4 encode, the total per video, the peak GPU memory (allocated and reserved) next to
what :mod:`memory` predicted, and writes a Markdown table. Speed options follow while the
time budget lasts: FlashAttention (when installed), ``torch.compile`` (first job with the
compile, second without), the tiled VAE decode at 720p.

Random weights make noise, not videos, but the same amount of work: the timings and
memory are those of the real model. ``--tiny`` runs the same code with the tiny test
models' sizes (on CPU in the test suite) to check the plumbing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field

from . import memory
from .pipelines import Options, Pipelines, Resident, configure, flash_attention_available
from .protocol import Generate, Load, Lora

GIB = 1 << 30


@dataclass
class Row:
    """One measured job."""

    mode: str
    size: tuple[int, int, int]
    vae: str
    text: float = 0.0
    high: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    decode: float = 0.0
    encode: float = 0.0
    total: float = 0.0
    peak: int | None = None
    reserved: int | None = None
    predicted: int | None = None
    note: str = ""


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def _default_dtype(dtype):
    """Parameters are made in ``dtype`` (a 14B model made in float32 first would need twice
    the memory)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_pipeline(configs: dict, device: str, dtype: str, tokenizer):
    """A Wan 2.2 t2v pipeline of ``configs`` with random weights (the modules' own
    initialisation), made directly on ``device`` and cast as ``Pipelines`` loads one."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from .pipelines import torch_dtype

    td = torch_dtype(dtype)
    plain = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731

    def transformer():
        with torch.device(device), _default_dtype(td):
            model = WanTransformer3DModel(**plain(configs["transformer"]))
        return memory.cast_like_the_runner(model, "transformer", td).eval()

    te_cfg = {k: v for k, v in plain(configs["text_encoder"]).items() if k not in ("architectures", "model_type", "transformers_version", "dtype", "torch_dtype")}
    with torch.device(device), _default_dtype(td):
        text_encoder = UMT5EncoderModel(UMT5Config(**te_cfg)).eval()
    with torch.device(device):
        vae = AutoencoderKLWan(**plain(configs["vae"])).to(torch.float32).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer(),
        transformer_2=transformer(),
        boundary_ratio=configs.get("boundary_ratio", 0.875),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_job(pipes: Pipelines, size, steps: int, device: str, experts: list[str], out_dir: str) -> Row:
    """One job through the runner's generate and MP4 writer, timed per stage."""
    import torch

    from .video import write_mp4

    width, height, frames = size
    pipe = pipes.resident["t2v"].pipe
    marks: list[float] = []
    text = [0.0]

    def report(done, total, stage):
        _sync(device)
        marks.append(time.perf_counter())

    def te_pre(module, args):
        _sync(device)
        text.append(-time.perf_counter())

    def te_post(module, args, output):
        _sync(device)
        text[-1] += time.perf_counter()

    hooks = [pipe.text_encoder.register_forward_pre_hook(te_pre), pipe.text_encoder.register_forward_hook(te_post)]
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    job = Generate(
        job_id="bench", pipeline="t2v", prompt="a red fox running in the snow", negative_prompt=None, width=width, height=height,
        num_frames=frames, fps=16, steps=steps, guidance=None, guidance_2=None, seed=1, image_path=None,
        output_path=os.path.join(out_dir, "bench.mp4"),
    )
    try:
        started = time.perf_counter()
        frames_out = pipes.generate(job, lambda: False, report)
        decoded = time.perf_counter()
        write_mp4(frames_out, job.output_path, 16)
        finished = time.perf_counter()
    finally:
        for h in hooks:
            h.remove()
    te = sum(text[1:])
    # marks: start, after each step, after the decode.
    step_times = [b - a for a, b in zip(marks[:steps], marks[1 : steps + 1])]
    step_times[0] -= te
    row = Row(mode="", size=size, vae="tiled" if getattr(pipe.vae, "use_tiling", False) else "whole")
    row.text = te
    row.high = [t for t, e in zip(step_times, experts) if e == "high"]
    row.low = [t for t, e in zip(step_times, experts) if e == "low"]
    row.decode = marks[steps + 1] - marks[steps]
    row.encode = finished - decoded
    row.total = finished - started
    if device.startswith("cuda"):
        row.peak = torch.cuda.max_memory_allocated()
        row.reserved = torch.cuda.max_memory_reserved()
    return row


def _mean(xs: list[float]) -> str:
    return f"{sum(xs) / len(xs):.2f}" if xs else "-"


def table(rows: list[Row], header: dict) -> str:
    """The results as Markdown."""
    lines = [f"- {k}: {v}" for k, v in header.items()]
    lines += [
        "",
        "| mode | size | VAE | text enc s | high-noise s/step | low-noise s/step | VAE decode s | MP4 s | total s/video | peak GiB (allocated / reserved) | planned peak GiB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w, h, f = r.size
        peak = f"{r.peak / GIB:.1f} / {r.reserved / GIB:.1f}" if r.peak is not None else "-"
        plan = f"{r.predicted / GIB:.1f}" if r.predicted else "-"
        if r.note.startswith(("OOM", "skipped", "failed")):
            lines.append(f"| {r.mode} | {w}x{h}x{f} | {r.vae} | | | | | | | {peak} | {plan} | {r.note} |")
            continue
        lines.append(
            f"| {r.mode} | {w}x{h}x{f} | {r.vae} | {r.text:.2f} | {_mean(r.high)} | {_mean(r.low)} | {r.decode:.2f} | {r.encode:.2f} | {r.total:.1f} | {peak} | {plan} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def parse_size(text: str) -> tuple[int, int, int]:
    w, h, f = (int(x) for x in text.lower().split("x"))
    return (w, h, f)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m pipelet_wan.bench", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="Markdown file for the table")
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", default="832x480x81,1280x720x81")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--modes", default="bf16,fp8", help="bf16 (the compute dtype: bf16 on CUDA, fp32 on CPU) and/or fp8 (FP8 weight storage), in that order")
    p.add_argument("--extras", default="flash,compile,tiled", help="speed options to measure after the main rows, while time lasts")
    p.add_argument("--budget-secs", type=float, default=480.0, help="stop starting new measurements after this long")
    p.add_argument("--tiny", action="store_true", help="the tiny test models' sizes (plumbing check, e.g. on CPU)")
    p.add_argument("--compile-backend", default="inductor", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_secs
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: CUDA is not available (use --device cpu --tiny for a plumbing check)", file=sys.stderr)
        return 2
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    extras = [e for e in args.extras.split(",") if e]
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import make_tiny_model

    if args.tiny:
        configs = tiny_configs(make_tiny_model)
    else:
        configs = dict(memory.PUBLISHED["t2v"])
    header = {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
        "model": "Wan 2.2 T2V A14B architecture, random weights" if not args.tiny else "tiny test sizes, random weights",
        "versions": f"torch {torch.__version__}, python {platform.python_version()}",
        "recipe": f"{args.steps} Lightning steps (Euler, shift 5), guidance 1.0, {dtype}",
    }
    try:
        import diffusers

        header["versions"] += f", diffusers {diffusers.__version__}"
    except ImportError:
        pass
    free = torch.cuda.mem_get_info()[0] if device.startswith("cuda") else None
    if free is not None:
        header["GPU memory free at start"] = f"{free / GIB:.1f} GiB"
    rows: list[Row] = []
    out_dir = tempfile.mkdtemp(prefix="pipelet-bench-")

    def write():
        header["wall time so far"] = f"{time.monotonic() - started:.0f} s"
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table(rows, header))

    t = time.monotonic()
    pipe = build_pipeline(configs, device, dtype, make_tiny_model.make_tokenizer())  # ids fit any vocabulary
    _sync(device)
    header["build (random weights on the device)"] = f"{time.monotonic() - t:.1f} s"
    opts = Options(device=device, dtype=dtype, compile_backend=args.compile_backend)
    from .pipelines import torch_dtype

    opts_dtype = torch_dtype(dtype)
    pipes = Pipelines(opts)
    # A Lightning pipeline as loaded with LoRAs: merged LoRAs cost nothing per step.
    load = Load("t2v", "bench", (Lora("merged", "high"), Lora("merged", "low")))
    configure(pipe, Load("t2v", "bench"), opts)
    from .sampling import describe, lightning_scheduler

    pipe.scheduler = lightning_scheduler()
    pipes.resident["t2v"] = Resident(load=load, pipe=pipe, seconds=0.0)
    experts = describe(pipe, args.steps)["experts"]
    weights_cache: dict = {}

    def predicted(mode: str, size, tiled: bool) -> int | None:
        if args.tiny:
            return None
        fp8 = mode.startswith("fp8")
        if fp8 not in weights_cache:
            weights_cache[fp8] = memory.weights(configs, dtype, fp8)
        acts = memory.activations_for(configs, size)
        return memory.plan("t2v", weights_cache[fp8], acts, vae_tiling=tiled).gpu

    def measure(mode: str, size, note: str = "", estimate: float = 0.0, tiling: bool = False) -> Row | None:
        if time.monotonic() + estimate > deadline:
            rows.append(Row(mode=mode, size=size, vae="-", note="skipped (time budget)"))
            write()
            return None
        # Tile the VAE decode when asked, or when the whole decode would not fit (720p on 80 GB).
        tiled = tiling
        if free is not None and not args.tiny and not tiled:
            tiled = memory.needs(predicted(mode, size, False)) > free
        if tiled:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        try:
            row = run_job(pipes, size, args.steps, device, experts, out_dir)
            row.note = note
        except Exception as e:  # OOM or a failure: record it, free memory, go on
            oom = "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"
            row = Row(mode=mode, size=size, vae="tiled" if tiled else "whole", note=("OOM: " if oom else "failed: ") + f"{type(e).__name__}: {str(e)[:160]}")
            if device.startswith("cuda"):
                row.peak, row.reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
                torch.cuda.empty_cache()
        row.mode = mode
        row.predicted = predicted(mode, size, row.vae == "tiled")
        rows.append(row)
        write()
        print(table([row], {}).splitlines()[-1], file=sys.stderr, flush=True)
        return row

    # Warm-up (CUDA context, cuBLAS handles, kernel selection) outside the timings.
    t = time.monotonic()
    run_job(pipes, (256, 256, 5) if not args.tiny else (32, 32, 1), 2, device, experts[:2], out_dir)
    header["warm-up job"] = f"{time.monotonic() - t:.1f} s"
    last_total = {}
    base_name = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[dtype]
    for mode in modes:
        if mode == "fp8":
            for model in (pipe.transformer, pipe.transformer_2):
                model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=opts_dtype)
        for size in sizes:
            # A 720p job costs about 2.5x a 480p one (tokens and attention grow faster).
            est = last_total.get(size, 0.0) or (2.5 * last_total[sizes[0]] if size != sizes[0] and sizes[0] in last_total else 0.0)
            row = measure(base_name if mode == "bf16" else f"fp8 weights, {base_name} compute", size, estimate=est)
            if row is not None and row.total:
                last_total[size] = row.total
    base = sizes[0]
    est = last_total.get(base, 0.0)
    current = base_name if modes[-1] == "bf16" else f"fp8 weights, {base_name} compute"
    if "flash" in extras:
        if flash_attention_available() and device.startswith("cuda"):
            for model in (pipe.transformer, pipe.transformer_2):
                model.set_attention_backend("flash")
            measure(f"{current} + flash-attn", base, estimate=est)
            for model in (pipe.transformer, pipe.transformer_2):
                model.set_attention_backend("native")
        else:
            rows.append(Row(mode=f"{current} + flash-attn", size=base, vae="-", note="skipped (flash-attn not installed)"))
    if "tiled" in extras and len(sizes) > 1:
        big = sizes[-1]
        if any(r.size == big and r.vae == "whole" and not r.note for r in rows):
            measure(f"{current} + VAE tiling", big, note="the tiled decode at 720p", estimate=last_total.get(big, 0.0), tiling=True)
    if "compile" in extras:
        t = time.monotonic()
        for model in (pipe.transformer, pipe.transformer_2):
            model.compile_repeated_blocks(backend=args.compile_backend)
        first = measure(f"{current} + compile (1st job)", base, estimate=est * 3)
        if first is not None and not first.note:
            first.note = f"includes compiling: {time.monotonic() - t:.0f} s wall"
            measure(f"{current} + compile (2nd job)", base, note="compiled graphs reused", estimate=est)
    write()
    print(open(args.out, encoding="utf-8").read())
    return 0


def tiny_configs(make_tiny_model) -> dict:
    """The tiny test models' component configs, as in :data:`memory.PUBLISHED`."""
    t = make_tiny_model.make_transformer(16)
    te = make_tiny_model.make_text_encoder()
    vae = make_tiny_model.make_vae()
    cfg = {
        "transformer": dict(t.config),
        "transformer_2": dict(t.config),
        "text_encoder": {k: v for k, v in te.config.to_dict().items() if k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets", "relative_attention_max_distance", "pad_token_id", "eos_token_id", "decoder_start_token_id", "feed_forward_proj")},
        "vae": dict(vae.config),
        "boundary_ratio": 0.875,
    }
    return json.loads(json.dumps(cfg))


if __name__ == "__main__":
    raise SystemExit(main())
