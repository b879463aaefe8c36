"""The tiny Flux pipeline: diffusers' real FluxPipeline classes with small random weights.

As :mod:`generation.model.tiny` is for SDXL: built in-process, seeded, no download. The shapes
follow diffusers' own tiny Flux test (tests/pipelines/flux/test_pipeline_flux.py): a one-layer
``FluxTransformer2DModel``, a CLIP text encoder for the pooled embedding and a T5 encoder for the
sequence; but the VAE has 4 blocks (latents 1/8 of the image, as the real one) and both
tokenizers are written from a byte-level vocabulary instead of coming from the Hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from generation.model.tiny import build_tiny_tokenizer, byte_chars

if TYPE_CHECKING:
    from diffusers import FluxPipeline

__all__ = ["TINY_FLUX_ID", "TINY_FLUX_MAX_SEQUENCE", "build_tiny_flux_pipeline", "build_tiny_t5_tokenizer"]

TINY_FLUX_ID = "tiny-random-flux"
TINY_FLUX_MAX_SEQUENCE = 64  # T5 tokens (the real schnell takes 256)
_LATENT_CHANNELS = 4  # packed 2x2 into the transformer's 16 input channels


def build_tiny_t5_tokenizer() -> Any:
    """A T5 (unigram) tokenizer over the byte-level characters, with and without the word mark."""
    from transformers import T5Tokenizer

    chars = byte_chars()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(char, -1.0) for char in chars] + [("\u2581" + char, -1.5) for char in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=TINY_FLUX_MAX_SEQUENCE)


def build_tiny_flux_pipeline(seed: int = 0) -> FluxPipeline:
    """A FluxPipeline of the real classes with small random weights (seeded, no download)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = build_tiny_tokenizer(), build_tiny_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77,
        hidden_act="gelu", projection_dim=32,
    ))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=_LATENT_CHANNELS * 4, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, latent_channels=_LATENT_CHANNELS, norm_num_groups=8, sample_size=256,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
