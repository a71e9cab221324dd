"""Parsing and framing of the runner protocol (no torch needed)."""

from __future__ import annotations

import io
import json

import pytest

from pipelet_wan import protocol
from pipelet_wan.protocol import Cancel, Generate, Load, Lora, ProtocolError, Shutdown
from pipelet_wan.server import CancelBoard

GENERATE = {
    "type": "generate",
    "job_id": "0b5e",
    "pipeline": "t2v",
    "prompt": "a cat",
    "negative_prompt": None,
    "width": 832,
    "height": 480,
    "num_frames": 81,
    "fps": 16,
    "steps": 4,
    "guidance": None,
    "seed": 18446744073709551615,
    "image_path": None,
    "output_path": "/tmp/out.mp4",
}


def parse(msg) -> object:
    """Parse ``msg`` as the runner would read it."""
    return protocol.parse_command(json.dumps(msg).encode())


def test_generate_parses_with_every_field():
    cmd = parse(GENERATE)
    assert isinstance(cmd, Generate)
    assert (cmd.width, cmd.height, cmd.num_frames, cmd.steps, cmd.seed) == (832, 480, 81, 4, 2**64 - 1)
    assert cmd.guidance is None and cmd.negative_prompt is None and cmd.image_path is None


def test_unknown_fields_are_ignored():
    cmd = parse(dict(GENERATE, future_field={"x": 1}))
    assert isinstance(cmd, Generate)


def test_i2v_needs_an_image_and_t2v_refuses_one():
    with pytest.raises(ProtocolError, match="image_path"):
        parse(dict(GENERATE, pipeline="i2v"))
    with pytest.raises(ProtocolError, match="image_path"):
        parse(dict(GENERATE, image_path="/tmp/x.png"))
    cmd = parse(dict(GENERATE, pipeline="i2v", image_path="/tmp/x.png"))
    assert cmd.image_path == "/tmp/x.png"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"width": 830}, "multiples of 16"),
        ({"height": 0}, "outside"),
        ({"num_frames": 80}, r"4k\+1"),
        ({"steps": 0}, "outside"),
        ({"steps": True}, "integer"),
        ({"seed": -1}, "outside"),
        ({"seed": 2**64}, "outside"),
        ({"width": "832"}, "integer"),
        ({"prompt": "   "}, "prompt"),
        ({"pipeline": "v2v"}, "pipeline"),
        ({"guidance": 100}, "outside"),
        ({"output_path": ""}, "output_path"),
    ],
)
def test_bad_generate_fields_are_refused_with_the_job_id(change, words):
    with pytest.raises(ProtocolError, match=words) as e:
        parse(dict(GENERATE, **change))
    assert e.value.job_id == "0b5e"


def test_missing_job_id_is_refused():
    msg = dict(GENERATE)
    del msg["job_id"]
    with pytest.raises(ProtocolError, match="job_id"):
        parse(msg)


def test_load_with_loras():
    cmd = parse(
        {
            "type": "load",
            "pipeline": "i2v",
            "model": "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
            "loras": [{"path": "/l/high.safetensors", "expert": "high"}, {"path": "/l/low.safetensors", "expert": "low", "scale": 0.5}],
        }
    )
    assert cmd == Load("i2v", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", (Lora("/l/high.safetensors", "high", 1.0), Lora("/l/low.safetensors", "low", 0.5)))
    assert parse({"type": "load", "pipeline": "t2v", "model": "/m"}).loras == ()


def test_bad_load_is_refused():
    with pytest.raises(ProtocolError, match="expert"):
        parse({"type": "load", "pipeline": "t2v", "model": "/m", "loras": [{"path": "/l", "expert": "mid"}]})
    with pytest.raises(ProtocolError, match="model"):
        parse({"type": "load", "pipeline": "t2v", "model": ""})


def test_cancel_shutdown_and_garbage():
    assert parse({"type": "cancel", "job_id": "j"}) == Cancel("j")
    assert parse({"type": "shutdown"}) == Shutdown()
    for line in [b"not json", b"[1,2]", b'{"type":"dance"}', b"\xff\xfe"]:
        with pytest.raises(ProtocolError):
            protocol.parse_command(line)


def test_read_line_bounds_and_skips_an_overlong_line():
    big = b'{"type":"cancel","job_id":"' + b"x" * protocol.MAX_LINE_BYTES + b'"}\n'
    stream = io.BytesIO(big + b'{"type":"shutdown"}\n')
    first = protocol.read_line(stream)
    assert len(first) == protocol.MAX_LINE_BYTES + 1
    with pytest.raises(ProtocolError, match="longer"):
        protocol.parse_command(first)
    # The rest of the long line is skipped; the next message is intact.
    assert protocol.parse_command(protocol.read_line(stream)) == Shutdown()
    assert protocol.read_line(stream) is None


def test_event_writer_writes_one_line_per_event_and_keeps_lines_bounded():
    out = io.BytesIO()
    w = protocol.EventWriter(out)
    w.send(protocol.progress("j", 1, 6, "denoise"))
    w.send(protocol.error("internal", "x" * (2 * protocol.MAX_LINE_BYTES), True, job_id="j"))
    lines = out.getvalue().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert json.loads(lines[0]) == {"type": "progress", "job_id": "j", "done": 1, "total": 6, "stage": "denoise"}
    err = json.loads(lines[1])
    assert err["kind"] == "internal" and len(lines[1]) < protocol.MAX_LINE_BYTES


def test_ready_names_the_version():
    event = protocol.ready("cuda", "bfloat16", {"torch": "2.15.0"})
    assert event["type"] == "ready" and event["protocol"] == protocol.PROTOCOL_VERSION == 1


def test_cancel_board_remembers_early_cancels_and_flags_the_current_job():
    board = CancelBoard()
    board.cancel("later")
    assert not board.start("now").is_set()
    flag = board.start("now")
    board.cancel("now")
    assert flag.is_set()
    board.finish()
    assert board.start("later").is_set()
    board.finish()
    assert not board.start("later").is_set(), "an early cancel is used once"
