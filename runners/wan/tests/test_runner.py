"""The runner end to end over its protocol, with the tiny models on CPU."""

from __future__ import annotations

import os

from PIL import Image

from conftest import generate_msg, load_msg
from pipelet_wan.video import top_level_boxes


def test_t2v_with_lightning_loras_makes_the_video_and_reports_each_task(runner, tiny_models, tmp_path):
    r = runner()
    r.send(load_msg(tiny_models, "t2v", loras=True))
    loaded = r.recv()
    assert loaded["type"] == "loaded", loaded
    assert (loaded["pipeline"], loaded["loras"], loaded["resident"]) == ("t2v", 2, ["t2v"])
    out = tmp_path / "t2v.mp4"
    r.send(generate_msg("job-1", "t2v", out))
    done, before = r.until(("done", "error", "cancelled"))
    assert done["type"] == "done", done
    progress = [(e["done"], e["total"]) for e in before if e["type"] == "progress"]
    # 2 steps + decode + encode, each reported; the first says the total up front.
    assert progress == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)], before
    assert done["path"] == str(out) and done["bytes"] == os.path.getsize(out)
    assert (done["frames"], done["width"], done["height"], done["fps"]) == (5, 64, 48, 16)
    boxes = top_level_boxes(str(out))
    assert boxes.index("moov") < boxes.index("mdat")


def test_i2v_from_an_image_and_switching_pipelines(runner, tiny_models, tmp_path):
    r = runner()
    image = tmp_path / "in.png"
    Image.new("RGB", (120, 90), (200, 40, 40)).save(image)
    r.send(load_msg(tiny_models, "i2v"))
    assert r.recv()["type"] == "loaded"
    out = tmp_path / "i2v.mp4"
    r.send(generate_msg("job-2", "i2v", out, width=64, height=48, image_path=str(image)))
    done, _ = r.until(("done", "error", "cancelled"))
    assert done["type"] == "done", done
    assert out.is_file()
    # With one pipeline resident at a time, loading t2v replaces i2v.
    r.send(load_msg(tiny_models, "t2v"))
    assert r.recv()["resident"] == ["t2v"]
    r.send(generate_msg("job-3", "i2v", tmp_path / "x.mp4", image_path=str(image)))
    err = r.recv()
    assert (err["type"], err["kind"], err["job_id"]) == ("error", "invalid", "job-3")
    assert "not loaded" in err["message"]


def test_cancel_mid_denoise_answers_cancelled_and_leaves_no_file(runner, tiny_models, tmp_path):
    r = runner()
    r.send(load_msg(tiny_models, "t2v"))
    assert r.recv()["type"] == "loaded"
    out = tmp_path / "c.mp4"
    r.send(generate_msg("job-c", "t2v", out, width=128, height=128, num_frames=9, steps=200))
    # Wait for the first finished step, then cancel.
    while True:
        event = r.recv()
        assert event["type"] == "progress", event
        if event["done"] >= 1:
            break
    r.send({"type": "cancel", "job_id": "job-c"})
    end, before = r.until(("done", "error", "cancelled"))
    assert end == {"type": "cancelled", "job_id": "job-c"}
    steps = [e["done"] for e in before if e["type"] == "progress"]
    assert max(steps, default=1) < 50, "the cancel stopped denoising within a few steps"
    assert os.listdir(tmp_path) == [], "no video and no partial file"
    # A cancel that arrives before its job is used when the job starts.
    r.send({"type": "cancel", "job_id": "job-d"})
    r.send(generate_msg("job-d", "t2v", out))
    assert r.recv() == {"type": "cancelled", "job_id": "job-d"}
    # The runner carries on.
    r.send(generate_msg("job-e", "t2v", out))
    done, _ = r.until(("done", "error", "cancelled"))
    assert done["type"] == "done", done


def test_errors_have_kinds_and_the_runner_survives_them(runner, tiny_models, tmp_path):
    r = runner()
    r.send({"type": "load", "pipeline": "t2v", "model": str(tmp_path / "missing")})
    err = r.recv()
    assert (err["type"], err["kind"], err["retryable"], err["pipeline"]) == ("error", "bad_weights", False, "t2v")
    r.send({"type": "load", "pipeline": "t2v", "model": str(tiny_models / "t2v"), "loras": [{"path": str(tmp_path / "nope.safetensors"), "expert": "low"}]})
    assert r.recv()["kind"] == "bad_weights"
    r.send_raw(b"{not json\n")
    err = r.recv()
    assert (err["type"], err["kind"]) == ("error", "invalid")
    r.send(dict(generate_msg("job-w", "t2v", tmp_path / "w.mp4"), width=30))
    err = r.recv()
    assert (err["kind"], err["job_id"]) == ("invalid", "job-w")
    r.send(load_msg(tiny_models, "i2v"))
    assert r.recv()["type"] == "loaded"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r.send(generate_msg("job-i", "i2v", tmp_path / "i.mp4", image_path=str(bad)))
    err = r.recv(timeout=60)
    while err["type"] == "progress":
        err = r.recv(timeout=60)
    assert (err["type"], err["kind"], err["retryable"]) == ("error", "invalid", False), err
    r.send({"type": "shutdown"})
    assert r.close() == 0
