"""Build tiny, random-weight Wan 2.2 pipelines for tests, offline.

Usage: ``python make_tiny_model.py OUT``

Writes, with ``save_pretrained``:

- ``OUT/t2v``: a ``WanPipeline`` with the Wan 2.2 A14B layout (``transformer`` and
  ``transformer_2``, ``boundary_ratio`` 0.875);
- ``OUT/i2v``: a ``WanImageToVideoPipeline`` with the same layout (``in_channels`` 36, no
  image encoder, ``boundary_ratio`` 0.9);
- ``OUT/lora/high_noise_model.safetensors`` and ``OUT/lora/low_noise_model.safetensors``:
  tiny LoRAs in the original (non-diffusers) Wan key format that the Wan2.2-Lightning
  LoRAs use, so the LoRA path is exercised exactly as with the real files.

Every component is built in code (a tiny UMT5 text encoder and a ``WordLevel``
tokenizer included), so nothing is downloaded. The sizes are those of diffusers' own
Wan tests, except ``rope_max_seq_len``, which keeps the real default (1024): the tests'
32 breaks above 512 pixels. Each pipeline is well under 1 MB on disk; the videos it
makes are noise, but real H.264 MP4s of the requested size and length.
"""

from __future__ import annotations

import argparse
import os
import sys

# Nothing here needs the network; fail fast instead of waiting on it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel  # noqa: E402

TEXT_DIM = 32
HEADS = 2
HEAD_DIM = 12
LAYERS = 2
LORA_RANK = 4
# Words the tiny tokenizer knows; anything else becomes <unk>. Ids stay below VOCAB_SIZE.
WORDS = (
    "a an the of in on at with and to cat dog fox bird fish red blue green yellow "
    "sky sea city forest river mountain night day sunset rain snow running flying "
    "walking swimming slow fast camera video test tiny prompt street light"
).split()
VOCAB_SIZE = 128


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then ``WORDS``."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    assert len(vocab) < VOCAB_SIZE
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    # Like T5: every sequence ends with </s>.
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def make_text_encoder() -> UMT5EncoderModel:
    """A 2-layer UMT5 encoder whose ``d_model`` matches the transformer's ``text_dim``."""
    config = UMT5Config(
        vocab_size=VOCAB_SIZE,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(config).eval()


def make_vae() -> AutoencoderKLWan:
    """The tiny Wan VAE of diffusers' tests (spatial /8, temporal /4, 16 latent channels)."""
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def make_transformer(in_channels: int) -> WanTransformer3DModel:
    """One tiny expert. ``in_channels`` is 16 for t2v, 36 (latents + mask + image) for i2v."""
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=in_channels,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=LAYERS,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        # Must cover the latent frame count and H/16, W/16: keep the real default.
        rope_max_seq_len=1024,
    ).eval()


def make_scheduler() -> UniPCMultistepScheduler:
    """The scheduler the Wan 2.2 A14B checkpoints ship (UniPC with flow sigmas)."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        num_train_timesteps=1000,
    )


def make_lora(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A small LoRA for one expert, in the key format of the Wan2.2-Lightning files."""
    dim = HEADS * HEAD_DIM
    state = {}
    for block in range(LAYERS):
        for proj in ("q", "k", "v", "o"):
            base = f"diffusion_model.blocks.{block}.self_attn.{proj}"
            state[f"{base}.lora_down.weight"] = 0.01 * torch.randn(
                LORA_RANK, dim, generator=generator
            )
            state[f"{base}.lora_up.weight"] = 0.01 * torch.randn(
                dim, LORA_RANK, generator=generator
            )
            state[f"{base}.alpha"] = torch.tensor(float(LORA_RANK))
    return state


def build(out: str) -> None:
    """Build and save the t2v and i2v pipelines and the LoRA pair under ``out``."""
    torch.manual_seed(0)
    t2v = WanPipeline(
        tokenizer=make_tokenizer(),
        text_encoder=make_text_encoder(),
        vae=make_vae(),
        scheduler=make_scheduler(),
        transformer=make_transformer(16),
        transformer_2=make_transformer(16),
        boundary_ratio=0.875,
    )
    t2v.save_pretrained(os.path.join(out, "t2v"))

    torch.manual_seed(1)
    i2v = WanImageToVideoPipeline(
        tokenizer=make_tokenizer(),
        text_encoder=make_text_encoder(),
        vae=make_vae(),
        scheduler=make_scheduler(),
        image_processor=None,
        image_encoder=None,
        transformer=make_transformer(36),
        transformer_2=make_transformer(36),
        boundary_ratio=0.9,
    )
    i2v.save_pretrained(os.path.join(out, "i2v"))

    lora_dir = os.path.join(out, "lora")
    os.makedirs(lora_dir, exist_ok=True)
    generator = torch.Generator().manual_seed(2)
    for name in ("high_noise_model", "low_noise_model"):
        save_file(make_lora(generator), os.path.join(lora_dir, f"{name}.safetensors"))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (t2v/, i2v/ and lora/ are made in it)")
    args = parser.parse_args(argv)
    build(args.out)
    print(f"tiny Wan 2.2 pipelines written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
