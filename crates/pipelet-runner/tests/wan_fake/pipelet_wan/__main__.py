"""A stand-in for the real Wan runner (runners/wan) that needs only the Python standard
library: it speaks protocol version 1 and misbehaves on request, so the Rust supervisor
can be tested quickly and without torch. The prompt picks the behaviour:

ok (default), slow (until cancelled), crash (SIGKILL itself mid-job), oom, internal,
fatal (error then exit), garbage (a non-JSON line), huge (a 2 MiB line).
"""

import json
import os
import signal
import sys
import threading
import time

out = sys.stdout.buffer
lock = threading.Lock()
cancelled = set()


def send(msg):
    with lock:
        out.write((json.dumps(msg) + "\n").encode())
        out.flush()


def log(text):
    print(f"fake-wan: {text}", file=sys.stderr, flush=True)


def generate(job):
    jid, total = job["job_id"], job["steps"] + 2
    prompt = job["prompt"]
    send({"type": "progress", "job_id": jid, "done": 0, "total": total, "stage": "denoise"})
    if prompt == "crash":
        log("about to crash")
        os.kill(os.getpid(), signal.SIGKILL)
    if prompt in ("oom", "internal", "fatal"):
        kind = "oom" if prompt == "oom" else "internal"
        send({"type": "error", "job_id": jid, "kind": kind, "message": f"{prompt} happened", "retryable": kind == "internal", "fatal": prompt == "fatal"})
        if prompt == "fatal":
            sys.exit(3)
        return
    if prompt == "garbage":
        with lock:
            out.write(b"this is not json\n")
            out.flush()
        time.sleep(30)
    if prompt == "huge":
        with lock:
            out.write(b"x" * (2 << 20) + b"\n")
            out.flush()
        time.sleep(30)
    steps = 100_000 if prompt == "slow" else job["steps"]
    for i in range(steps):
        if jid in cancelled:
            send({"type": "cancelled", "job_id": jid})
            return
        time.sleep(0.01)
        send({"type": "progress", "job_id": jid, "done": i + 1, "total": total, "stage": "denoise"})
    with open(job["output_path"], "wb") as f:
        f.write(b"not really an mp4")
    if job.get("image_path"):
        assert open(job["image_path"], "rb").read(), "the input image is empty"
    send({"type": "progress", "job_id": jid, "done": total, "total": total, "stage": "encode"})
    send({"type": "done", "job_id": jid, "path": job["output_path"], "frames": job["num_frames"], "width": job["width"], "height": job["height"], "fps": job["fps"], "bytes": 17, "seconds": 0.1})


def main():
    send({"type": "ready", "protocol": int(os.environ.get("FAKE_PROTOCOL", "1")), "device": "cpu", "dtype": "float32", "versions": {"python": sys.version.split()[0]}})
    jobs = []
    cond = threading.Condition()

    def reader():
        for line in sys.stdin.buffer:
            msg = json.loads(line)
            if msg["type"] == "cancel":
                cancelled.add(msg["job_id"])
                continue
            with cond:
                jobs.append(msg)
                cond.notify()
        with cond:
            jobs.append(None)
            cond.notify()

    threading.Thread(target=reader, daemon=True).start()
    resident = []
    while True:
        with cond:
            while not jobs:
                cond.wait()
            msg = jobs.pop(0)
        if msg is None or msg["type"] == "shutdown":
            return
        if msg["type"] == "load":
            if msg["model"] == "missing":
                send({"type": "error", "kind": "bad_weights", "message": "no such model", "retryable": False, "pipeline": msg["pipeline"]})
                continue
            log(f"loading {msg['pipeline']} with {len(msg['loras'])} loras")
            resident = [msg["pipeline"]]
            send({"type": "loaded", "pipeline": msg["pipeline"], "model": msg["model"], "loras": len(msg["loras"]), "seconds": 0.0, "resident": resident})
        elif msg["type"] == "generate":
            generate(msg)


main()
