"""``python -m pipelet_wan [options]``: start the runner on stdin/stdout.

The worker starts this process (one per GPU; choose the GPU with
``CUDA_VISIBLE_DEVICES``). It prints ``ready`` once torch and diffusers are imported,
then follows ``PROTOCOL.md``. Only protocol messages reach stdout: the original stdout
is kept for them and file descriptor 1 is pointed at stderr, so stray prints from
libraries (or ffmpeg) cannot corrupt the stream.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import sys

from . import __version__, protocol


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The runner's command line (``pipelet worker`` passes its ``--wan-*`` flags here)."""
    p = argparse.ArgumentParser(prog="python -m pipelet_wan", description="pipelet's Wan 2.2 runner (JSON lines on stdin/stdout)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"], help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument(
        "--offload",
        default="none",
        choices=["none", "model", "sequential"],
        help="CUDA memory: none (all on the GPU), model (enable_model_cpu_offload), sequential (enable_sequential_cpu_offload)",
    )
    p.add_argument("--fp8", action="store_true", help="store the transformers' weights in FP8 (layerwise casting; compute stays in --dtype)")
    p.add_argument("--vae-tiling", action="store_true", help="decode the VAE in tiles (less memory at 720p)")
    p.add_argument("--max-loaded", type=int, default=1, help="pipelines kept in memory at once (default 1: t2v and i2v each need a whole A14B)")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "flash", "auto"], help="attention kernel: sdpa (PyTorch), flash (the flash-attn package), auto (flash when installed)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks once per loaded pipeline")
    p.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="PIPELINE=MODEL",
        help="a pipeline this runner will be asked to load (t2v=/models/t2v); its memory plan is checked at start",
    )
    p.add_argument("--gpu-memory", type=float, metavar="GIB", help="check the memory plan against this many GiB instead of the device's free memory (also on CPU)")
    p.add_argument("--skip-memory-check", action="store_true", help="start even if the memory plan does not fit")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    # Keep the real stdout for the protocol; everything else written to fd 1 goes to stderr.
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    # Ctrl-C in the worker's terminal reaches this process too; the worker decides when
    # to stop (it closes stdin or sends `shutdown`), so a drain can finish the job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="pipelet-wan %(levelname)s %(message)s")
    log = logging.getLogger("pipelet_wan")

    import diffusers
    import torch
    import transformers

    from .pipelines import Options, Pipelines

    # tqdm bars would flood the worker's log with carriage returns.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    # diffusers names CLIPImageProcessor for the optional Wan 2.1 image encoder; Wan 2.2
    # has none, so transformers' "requires torchvision" fallback notice is only noise
    # (and would crowd out the lines a crash report quotes).
    logging.getLogger("transformers.utils.import_utils").addFilter(lambda r: "requires torchvision" not in r.getMessage())
    from .server import Server

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.error("--device %s: CUDA is not available", device)
        return 2
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if args.max_loaded < 1:
        log.error("--max-loaded must be at least 1")
        return 2
    if args.offload != "none" and not device.startswith("cuda"):
        log.warning("--offload %s has no effect on %s", args.offload, device)
    from .pipelines import attention_backend

    try:
        backend = attention_backend(args.attention, device)
    except ValueError as e:
        log.error("%s", e)
        return 2
    options = Options(
        device=device,
        dtype=dtype,
        offload=args.offload,
        fp8=args.fp8,
        vae_tiling=args.vae_tiling,
        max_loaded=args.max_loaded,
        attention=args.attention,
        compile=args.compile,
    )
    extra = {
        "runner": f"pipelet-wan {__version__}",
        "offload": args.offload,
        "fp8": args.fp8,
        "attention": backend,
        "compile": args.compile,
        "pid": os.getpid(),
    }
    free = None
    where = device
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        extra["device_name"] = props.name
        extra["device_memory_bytes"] = props.total_memory
        free = torch.cuda.mem_get_info(index)[0]
        where = f"{device} ({props.name})"
    if args.gpu_memory is not None:
        free = int(args.gpu_memory * (1 << 30))
        where = f"--wan-gpu-memory {args.gpu_memory:g}"
    if free is not None and args.serve:
        try:
            message = memory_check(args, options, free, where, log)
        except ValueError as e:
            log.error("%s", e)
            return 2
        if message is not None:
            if not args.skip_memory_check:
                log.error("refusing to start: %s", message)
                return 2
            log.warning("the memory plan does not fit, starting anyway (--skip-memory-check): %s", message)
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    writer = protocol.EventWriter(proto_out)
    server = Server(Pipelines(options), writer)
    server.start_reader(sys.stdin.buffer)
    writer.send(protocol.ready(device, dtype, versions, **extra))
    log.info("ready on %s (%s), torch %s, diffusers %s", device, dtype, torch.__version__, diffusers.__version__)
    try:
        return server.run()
    except BrokenPipeError:
        log.info("the worker closed the pipe")
        return 0


def memory_check(args, options, free: int, where: str, log) -> str | None:
    """``None`` if the pipelines in ``--serve`` fit ``free`` bytes with these options,
    else why not (see ``memory.py``)."""
    from . import memory

    pipelines = {}
    for item in args.serve:
        name, _, model = item.partition("=")
        if name not in ("t2v", "i2v") or not model:
            raise ValueError(f"--serve {item!r}: expected t2v=MODEL or i2v=MODEL")
        try:
            configs, source = memory.configs_of(model, name)
        except ValueError as e:
            log.warning("memory check: %s; assuming the published A14B sizes", e)
            configs, source = memory.PUBLISHED[name], "the published A14B sizes"
        log.info("memory plan for %s from %s", name, source)
        pipelines[name] = configs
    setup = memory.Setup(offload=options.offload, fp8=options.fp8, vae_tiling=options.vae_tiling, dtype=options.dtype, max_loaded=options.max_loaded)
    need, detail = memory.needed(pipelines, setup)
    log.info("memory plan: ~%.1f GiB of GPU memory for %s; %.1f GiB available on %s", need / (1 << 30), detail, free / (1 << 30), where)
    return memory.check_fit(pipelines, setup, free, where)


def exit_now(code: int) -> None:
    """Flush and leave without interpreter teardown: native thread pools (torch,
    tokenizers) can abort the process while being torn down under a daemon thread
    still blocked on stdin, which would turn a clean exit into SIGABRT."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
