"""Shared fixtures: the tiny Wan 2.2 models and a runner process driven over the protocol."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

RUNNER_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(RUNNER_DIR))

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Folder with t2v/, i2v/ and lora/: ``$PIPELET_WAN_TINY_MODELS`` or built now."""
    given = os.environ.get("PIPELET_WAN_TINY_MODELS")
    if given and (Path(given) / "t2v" / "model_index.json").is_file():
        return Path(given)
    import make_tiny_model

    out = tmp_path_factory.mktemp("tiny")
    make_tiny_model.build(str(out))
    return out


class RunnerProcess:
    """``python -m pipelet_wan`` as the worker sees it: JSON lines in and out."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONPATH=str(RUNNER_DIR), HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelet_wan", "--device", "cpu", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
        )
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        """Collect stdout lines as messages; ``None`` at the end."""
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, msg: dict) -> None:
        """Write one command line."""
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes (to test broken input)."""
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv(self, timeout: float = 120.0) -> dict:
        """The next message; fails the test after ``timeout`` seconds or at end of output."""
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no message from the runner within {timeout} s")
        assert event is not None, "the runner closed stdout"
        return event

    def until(self, types: tuple[str, ...], timeout: float = 300.0) -> tuple[dict, list[dict]]:
        """Messages up to the first of ``types``: (that message, the ones before it)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            event = self.recv(max(0.1, deadline - time.monotonic()))
            if event["type"] in types:
                return event, seen
            seen.append(event)

    def close(self) -> int:
        """Close stdin and wait for the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@pytest.fixture
def runner():
    """A started runner (``ready`` already read); closed after the test."""
    started = []

    def start(*args: str) -> RunnerProcess:
        """Start a runner with ``args`` and read its ``ready``."""
        r = RunnerProcess(*args)
        started.append(r)
        ready = r.recv(timeout=180)
        assert ready["type"] == "ready", ready
        return r

    yield start
    for r in started:
        r.close()


def load_msg(models: Path, pipeline: str, loras: bool = False) -> dict:
    """A ``load`` for a tiny pipeline, with the tiny Lightning-format LoRAs if asked."""
    msg = {"type": "load", "pipeline": pipeline, "model": str(models / pipeline)}
    if loras:
        msg["loras"] = [
            {"path": str(models / "lora" / "high_noise_model.safetensors"), "expert": "high"},
            {"path": str(models / "lora" / "low_noise_model.safetensors"), "expert": "low"},
        ]
    return msg


def generate_msg(job_id: str, pipeline: str, out: Path, **over) -> dict:
    """A small ``generate`` (64x48, 5 frames, 2 steps) with ``over`` applied."""
    msg = {
        "type": "generate",
        "job_id": job_id,
        "pipeline": pipeline,
        "prompt": "a red fox running in the forest",
        "width": 64,
        "height": 48,
        "num_frames": 5,
        "fps": 16,
        "steps": 2,
        "seed": 42,
        "output_path": str(out),
    }
    msg.update(over)
    return msg
