"""The runner's main loop: read commands, run them one at a time, answer on stdout.

A reader thread owns stdin. ``cancel`` is handled on that thread at once (it only flags
the job, which the denoising loop polls every step); everything else is queued for the
main thread, which runs ``load`` and ``generate`` in order. End of stdin means the
worker is gone: the job in hand is cancelled and the process exits.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import BinaryIO

from . import protocol
from .pipelines import Cancelled, Failure, Pipelines
from .protocol import Cancel, EventWriter, Generate, Load, ProtocolError, Shutdown
from .video import EncodeCancelled, write_mp4

log = logging.getLogger("pipelet_wan")

# Exit codes.
EXIT_OK = 0
EXIT_FATAL = 3  # the accelerator is in a state only a new process can fix

_EOF = object()
# Cancels that arrive before their job starts are remembered, within reason.
MAX_EARLY_CANCELS = 256


class CancelBoard:
    """Which job runs now and which jobs have been asked to stop (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: str | None = None
        self._event = threading.Event()
        self._early: collections.OrderedDict[str, None] = collections.OrderedDict()

    def cancel(self, job_id: str) -> None:
        """Stop ``job_id``: now if it runs, when it starts if it has not started yet."""
        with self._lock:
            if job_id == self._current:
                self._event.set()
                return
            self._early[job_id] = None
            while len(self._early) > MAX_EARLY_CANCELS:
                self._early.popitem(last=False)

    def cancel_current(self) -> None:
        """Stop whatever runs now (the worker went away)."""
        with self._lock:
            self._event.set()

    def start(self, job_id: str) -> threading.Event:
        """``job_id`` starts; its cancel flag (already set if it was cancelled early)."""
        with self._lock:
            self._current = job_id
            self._event = threading.Event()
            if job_id in self._early:
                del self._early[job_id]
                self._event.set()
            return self._event

    def finish(self) -> None:
        """The current job has ended."""
        with self._lock:
            self._current = None


class Server:
    """Runs the protocol over ``stdin`` and ``writer`` with ``pipelines``."""

    def __init__(self, pipelines: Pipelines, writer: EventWriter):
        self.pipelines = pipelines
        self.writer = writer
        self.board = CancelBoard()
        self.commands: queue.Queue = queue.Queue()

    def start_reader(self, stdin: BinaryIO) -> threading.Thread:
        """Start the thread that reads commands from ``stdin``."""
        thread = threading.Thread(target=self._read, args=(stdin,), name="stdin", daemon=True)
        thread.start()
        return thread

    def _read(self, stdin: BinaryIO) -> None:
        """The stdin thread: cancels take effect here, other commands are queued."""
        try:
            while True:
                line = protocol.read_line(stdin)
                if line is None:
                    break
                if not line.strip():
                    continue
                try:
                    cmd = protocol.parse_command(line)
                except ProtocolError as e:
                    self.commands.put(e)
                    continue
                if isinstance(cmd, Cancel):
                    log.info("cancel requested for %s", cmd.job_id)
                    self.board.cancel(cmd.job_id)
                else:
                    self.commands.put(cmd)
        except Exception:  # a broken stdin is the same as a closed one
            log.exception("reading stdin failed")
        self.board.cancel_current()
        self.commands.put(_EOF)

    def run(self) -> int:
        """Handle commands until stdin closes or ``shutdown``; returns the exit code."""
        while True:
            cmd = self.commands.get()
            if cmd is _EOF or isinstance(cmd, Shutdown):
                log.info("shutting down")
                return EXIT_OK
            if isinstance(cmd, ProtocolError):
                self.writer.send(protocol.error("invalid", str(cmd), False, job_id=cmd.job_id))
                continue
            fatal = self.load(cmd) if isinstance(cmd, Load) else self.generate(cmd)
            if fatal:
                log.error("the device is unusable; exiting so the worker starts a new runner")
                return EXIT_FATAL

    def load(self, cmd: Load) -> bool:
        """Answer one ``load``; returns whether the process must exit."""
        try:
            resident = self.pipelines.load(cmd)
        except Failure as f:
            log.error("%s", f.message)
            self.writer.send(protocol.error(f.kind, f.message, f.retryable, pipeline=cmd.pipeline, fatal=f.fatal))
            return f.fatal
        log.info("%s ready in %.1f s", cmd.pipeline, resident.seconds)
        self.writer.send(protocol.loaded(cmd.pipeline, cmd.model, len(cmd.loras), resident.seconds, self.pipelines.names()))
        return False

    def generate(self, job: Generate) -> bool:
        """Answer one ``generate``; returns whether the process must exit."""
        stop = self.board.start(job.job_id)
        started = time.monotonic()
        total = job.steps + 2

        def report(done: int, of: int, stage: str) -> None:
            """Send one ``progress`` message."""
            self.writer.send(protocol.progress(job.job_id, done, of, stage))

        try:
            if stop.is_set():
                raise Cancelled()
            log.info("job %s: %s %dx%d, %d frames, %d steps", job.job_id, job.pipeline, job.width, job.height, job.num_frames, job.steps)
            frames = self.pipelines.generate(job, stop.is_set, report)
            if tuple(frames.shape[:3]) != (job.num_frames, job.height, job.width):
                raise Failure("internal", f"the pipeline made {frames.shape[:3]} frames, not {(job.num_frames, job.height, job.width)}", True)
            size = write_mp4(frames, job.output_path, job.fps, should_stop=stop.is_set)
            report(total, total, "encode")
            seconds = time.monotonic() - started
            log.info("job %s done in %.1f s (%d bytes)", job.job_id, seconds, size)
            self.writer.send(protocol.done(job.job_id, job.output_path, len(frames), job.width, job.height, job.fps, size, seconds))
        except (Cancelled, EncodeCancelled):
            log.info("job %s cancelled", job.job_id)
            self.writer.send(protocol.cancelled(job.job_id))
        except Failure as f:
            log.error("job %s failed (%s): %s", job.job_id, f.kind, f.message)
            self.writer.send(protocol.error(f.kind, f.message, f.retryable, job_id=job.job_id, fatal=f.fatal))
            return f.fatal
        except OSError as e:  # writing the video: disk full, a missing folder...
            log.error("job %s: %s", job.job_id, e)
            self.writer.send(protocol.error("internal", f"cannot write the video: {e}", True, job_id=job.job_id))
        except Exception as e:
            log.exception("job %s failed", job.job_id)
            self.writer.send(protocol.error("internal", f"{type(e).__name__}: {e}", True, job_id=job.job_id))
        finally:
            self.board.finish()
        return False
