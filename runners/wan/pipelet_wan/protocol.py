"""The runner protocol (version 1): JSON lines between ``pipelet worker`` and this runner.

This module only parses and builds messages; it imports neither torch nor diffusers, so
it is cheap to test. ``PROTOCOL.md`` is the reference; keep the two in step.

Framing: one JSON object per line, UTF-8, at most :data:`MAX_LINE_BYTES` bytes per line in
either direction. Every message has a ``type``. Unknown fields are ignored, so fields can
be added without a version change; anything else bumps :data:`PROTOCOL_VERSION`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Union

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20

PIPELINES = ("t2v", "i2v")
EXPERTS = ("high", "low")
ERROR_KINDS = ("oom", "bad_weights", "invalid", "internal")

# Bounds that keep a broken or hostile message from reaching the pipelines.
MAX_SIDE = 4096
MAX_FRAMES = 1025
MAX_STEPS = 200
MAX_PROMPT_CHARS = 20_000
MAX_SEED = (1 << 64) - 1


class ProtocolError(ValueError):
    """A message that breaks the protocol; answered with an ``invalid`` error."""

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


@dataclass(frozen=True)
class Lora:
    """One LoRA file for one expert: ``high`` (``transformer``) or ``low`` (``transformer_2``)."""

    path: str
    expert: str
    scale: float = 1.0


@dataclass(frozen=True)
class Load:
    """``load``: make ``pipeline`` resident from ``model`` (a folder or hub id) with ``loras``."""

    pipeline: str
    model: str
    loras: tuple[Lora, ...] = ()


@dataclass(frozen=True)
class Generate:
    """``generate``: render one job into ``output_path``."""

    job_id: str
    pipeline: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance: float | None
    guidance_2: float | None
    seed: int
    image_path: str | None
    output_path: str


@dataclass(frozen=True)
class Cancel:
    """``cancel``: stop job ``job_id`` if it is queued or running."""

    job_id: str


@dataclass(frozen=True)
class Shutdown:
    """``shutdown``: exit once the job in hand is finished."""


Command = Union[Load, Generate, Cancel, Shutdown]


def _field(msg: dict, name: str, kind: type | tuple, *, required: bool = True, job_id=None):
    """``msg[name]`` checked against ``kind`` (``None`` allowed when not required)."""
    value = msg.get(name)
    if value is None:
        if required:
            raise ProtocolError(f"`{name}` is required", job_id)
        return None
    # bool is an int in Python; never accept it where a number is meant.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ProtocolError(f"`{name}` must be {_kind_name(kind)}", job_id)
    if not isinstance(value, kind):
        raise ProtocolError(f"`{name}` must be {_kind_name(kind)}", job_id)
    return value


def _kind_name(kind) -> str:
    """How ``kind`` reads in an error message ("an integer")."""
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", bool: "a boolean"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _int_in(msg, name, lo, hi, job_id) -> int:
    """The integer ``msg[name]``, required, within ``lo..hi``."""
    value = _field(msg, name, int, job_id=job_id)
    if not lo <= value <= hi:
        raise ProtocolError(f"`{name}` {value} is outside {lo}..{hi}", job_id)
    return value


def _number(msg, name, lo, hi, job_id) -> float | None:
    """The optional number ``msg[name]`` within ``lo..hi`` (``None`` if absent)."""
    value = _field(msg, name, (int, float), required=False, job_id=job_id)
    if value is None:
        return None
    if not lo <= value <= hi:
        raise ProtocolError(f"`{name}` {value} is outside {lo}..{hi}", job_id)
    return float(value)


def _pipeline(msg, job_id=None) -> str:
    """``msg["pipeline"]``: one of :data:`PIPELINES`."""
    value = _field(msg, "pipeline", str, job_id=job_id)
    if value not in PIPELINES:
        raise ProtocolError(f"`pipeline` must be one of {', '.join(PIPELINES)}, not {value!r}", job_id)
    return value


def _parse_load(msg: dict) -> Load:
    """A ``load`` message."""
    pipeline = _pipeline(msg)
    model = _field(msg, "model", str)
    if not model.strip():
        raise ProtocolError("`model` must not be empty")
    loras = []
    for i, item in enumerate(_field(msg, "loras", list, required=False) or []):
        if not isinstance(item, dict):
            raise ProtocolError(f"`loras[{i}]` must be an object")
        path = _field(item, "path", str)
        expert = _field(item, "expert", str)
        if expert not in EXPERTS:
            raise ProtocolError(f"`loras[{i}].expert` must be high or low, not {expert!r}")
        scale = _number(item, "scale", -10.0, 10.0, None)
        loras.append(Lora(path=path, expert=expert, scale=1.0 if scale is None else scale))
    return Load(pipeline=pipeline, model=model, loras=tuple(loras))


def _parse_generate(msg: dict) -> Generate:
    """A ``generate`` message, every field checked."""
    job_id = _field(msg, "job_id", str)
    if not job_id or len(job_id) > 200:
        raise ProtocolError("`job_id` must be 1 to 200 characters")
    pipeline = _pipeline(msg, job_id)
    prompt = _field(msg, "prompt", str, job_id=job_id)
    if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
        raise ProtocolError(f"`prompt` must be 1 to {MAX_PROMPT_CHARS} characters", job_id)
    negative = _field(msg, "negative_prompt", str, required=False, job_id=job_id)
    if negative is not None and len(negative) > MAX_PROMPT_CHARS:
        raise ProtocolError(f"`negative_prompt` is over {MAX_PROMPT_CHARS} characters", job_id)
    width = _int_in(msg, "width", 16, MAX_SIDE, job_id)
    height = _int_in(msg, "height", 16, MAX_SIDE, job_id)
    if width % 16 or height % 16:
        raise ProtocolError(f"{width}x{height}: width and height must be multiples of 16", job_id)
    num_frames = _int_in(msg, "num_frames", 1, MAX_FRAMES, job_id)
    if num_frames % 4 != 1:
        raise ProtocolError(f"`num_frames` {num_frames} must be of the form 4k+1", job_id)
    fps = _int_in(msg, "fps", 1, 120, job_id)
    steps = _int_in(msg, "steps", 1, MAX_STEPS, job_id)
    guidance = _number(msg, "guidance", 0.0, 50.0, job_id)
    guidance_2 = _number(msg, "guidance_2", 0.0, 50.0, job_id)
    seed = _int_in(msg, "seed", 0, MAX_SEED, job_id)
    image_path = _field(msg, "image_path", str, required=False, job_id=job_id)
    if pipeline == "i2v" and not image_path:
        raise ProtocolError("an i2v job needs `image_path`", job_id)
    if pipeline == "t2v" and image_path:
        raise ProtocolError("a t2v job takes no `image_path`", job_id)
    output_path = _field(msg, "output_path", str, job_id=job_id)
    if not output_path:
        raise ProtocolError("`output_path` must not be empty", job_id)
    return Generate(
        job_id=job_id,
        pipeline=pipeline,
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        steps=steps,
        guidance=guidance,
        guidance_2=guidance_2,
        seed=seed,
        image_path=image_path,
        output_path=output_path,
    )


def parse_command(line: bytes | str) -> Command:
    """Parse one line from the worker. Raises :class:`ProtocolError` on anything invalid."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError(f"line longer than {MAX_LINE_BYTES} bytes")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"line is not UTF-8: {e}") from None
    try:
        msg = json.loads(line)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"line is not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = msg.get("type")
    if kind == "load":
        return _parse_load(msg)
    if kind == "generate":
        return _parse_generate(msg)
    if kind == "cancel":
        return Cancel(job_id=_field(msg, "job_id", str))
    if kind == "shutdown":
        return Shutdown()
    raise ProtocolError(f"unknown message type {kind!r}")


def read_line(stream: BinaryIO) -> bytes | None:
    """Read one line of at most :data:`MAX_LINE_BYTES`; ``None`` at end of input.

    A longer line is consumed whole and returned truncated to ``MAX_LINE_BYTES + 1``
    bytes, so :func:`parse_command` rejects it without ever holding all of it.
    """
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        return None
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        while True:
            rest = stream.readline(MAX_LINE_BYTES)
            if not rest or rest.endswith(b"\n"):
                break
    return line


class EventWriter:
    """Writes runner→worker messages, one JSON line each, from any thread."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        """Write ``event`` as one line and flush it."""
        data = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(data) >= MAX_LINE_BYTES:
            # Only a message (an error text) can grow; never break the framing.
            event = dict(event, message=str(event.get("message", ""))[:4000])
            data = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with self._lock:
            self._stream.write(data + b"\n")
            self._stream.flush()


def ready(device: str, dtype: str, versions: dict[str, str], **extra: Any) -> dict:
    """The first message: the runner is up and speaks ``PROTOCOL_VERSION``."""
    return {"type": "ready", "protocol": PROTOCOL_VERSION, "device": device, "dtype": dtype, "versions": versions, **extra}


def loaded(pipeline: str, model: str, loras: int, seconds: float, resident: list[str]) -> dict:
    """Answer to ``load``."""
    return {
        "type": "loaded",
        "pipeline": pipeline,
        "model": model,
        "loras": loras,
        "seconds": round(seconds, 3),
        "resident": resident,
    }


def progress(job_id: str, done: int, total: int, stage: str) -> dict:
    """``done`` of ``total`` tasks of a job are finished; ``stage`` is what runs now."""
    return {"type": "progress", "job_id": job_id, "done": done, "total": total, "stage": stage}


def done(job_id: str, path: str, frames: int, width: int, height: int, fps: int, size: int, seconds: float) -> dict:
    """Answer to ``generate``: the MP4 is complete at ``path`` (``bytes`` long)."""
    return {
        "type": "done",
        "job_id": job_id,
        "path": path,
        "frames": frames,
        "width": width,
        "height": height,
        "fps": fps,
        "bytes": size,
        "seconds": round(seconds, 3),
    }


def cancelled(job_id: str) -> dict:
    """Answer to ``generate`` after a ``cancel``: no file was left at ``output_path``."""
    return {"type": "cancelled", "job_id": job_id}


def error(kind: str, message: str, retryable: bool, *, job_id: str | None = None, pipeline: str | None = None, fatal: bool = False) -> dict:
    """Answer to ``load`` or ``generate`` (or to a line that could not be parsed)."""
    assert kind in ERROR_KINDS, kind
    event = {"type": "error", "kind": kind, "message": message, "retryable": retryable}
    if job_id is not None:
        event["job_id"] = job_id
    if pipeline is not None:
        event["pipeline"] = pipeline
    if fatal:
        event["fatal"] = True
    return event
