"""GPU benchmark: full-size SDXL UNet + VAE with random weights, 1024², 4 Lightning steps.

Random weights cost the same FLOPs as the real SDXL-Lightning ones, so nothing is downloaded.
Text encoders are bypassed (random prompt embeddings); they cost a few ms per batch.
Per batch size it times one batch end to end (4 UNet passes, Euler trailing, guidance 0, then a
per-image VAE decode as the bot does), eager and with torch.compile(unet).

    python bench/gpu_bench.py                 # batch 1, 2, 4, 8; eager and compiled
    python bench/gpu_bench.py --quick         # batch 1, 2; eager only
    python bench/gpu_bench.py --dry-run-cpu   # build the full-size configs on the meta device, exit

Writes ``<out>/gpu_bench.json`` and ``<out>/gpu_bench.png`` (default out: bench/results).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 1024
STEPS = 4

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the Lightning UNets share it).
SDXL_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": (5, 10, 20),
    "block_out_channels": (320, 640, 1280),
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + pooled text 1280
    "sample_size": 128,
    "transformer_layers_per_block": (1, 2, 10),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "use_linear_projection": True,
}

# stabilityai/stable-diffusion-xl-base-1.0 vae/config.json
SDXL_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "num_train_timesteps": 1000,
    "timestep_spacing": "trailing",
}


def build_models(device: torch.device | str, dtype: torch.dtype) -> tuple[Any, Any, Any]:
    """The full-size SDXL UNet, VAE and Lightning scheduler with random weights on ``device``."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    with torch.device(device):  # initialise directly on the GPU (or meta): fast, no host copy
        unet = UNet2DConditionModel.from_config(SDXL_UNET_CONFIG)
        vae = AutoencoderKL.from_config(SDXL_VAE_CONFIG)
    if str(device) != "meta":
        unet, vae = unet.to(dtype=dtype).eval(), vae.to(dtype=dtype).eval()
    return unet, vae, EulerDiscreteScheduler(**SCHEDULER_CONFIG)


def generate(unet: Any, vae: Any, scheduler: Any, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """One Lightning batch from random prompt embeddings: 4 UNet passes, then per-image decode."""
    device = vae.device
    prompt_embeds = torch.randn(batch, 77, 2048, device=device, dtype=dtype)
    pooled = torch.randn(batch, 1280, device=device, dtype=dtype)
    time_ids = torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]] * batch, device=device, dtype=dtype)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(batch)]
    noise = [torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=g) for g in generators]
    scheduler.set_timesteps(STEPS, device=device)
    latents = torch.cat(noise).to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        noise_pred = unet(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
            return_dict=False,
        )[0]
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
    latents = latents.to(dtype) / vae.config.scaling_factor
    return torch.cat([vae.decode(latents[i : i + 1], return_dict=False)[0] for i in range(batch)])


def time_batches(
    unet: Any, vae: Any, scheduler: Any, sizes: list[int], dtype: torch.dtype, repeats: int
) -> list[dict[str, float]]:
    """Median seconds per batch for each batch size (after a warmup run)."""
    rows = []
    for batch in sizes:
        torch.cuda.reset_peak_memory_stats()
        generate(unet, vae, scheduler, batch, dtype)  # warmup (and compilation for this shape)
        torch.cuda.synchronize()
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            generate(unet, vae, scheduler, batch, dtype)
            torch.cuda.synchronize()
            runs.append(time.perf_counter() - start)
        seconds = statistics.median(runs)
        rows.append(
            {
                "batch": batch,
                "seconds_per_batch": seconds,
                "ms_per_image": 1000 * seconds / batch,
                "images_per_s": batch / seconds,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
        )
        logger.info("batch %d: %.0f ms/image, %.2f images/s", batch, rows[-1]["ms_per_image"], rows[-1]["images_per_s"])
    return rows


def plot(results: dict[str, Any], path: Path) -> None:
    """ms/image and images/s against batch size, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, rows in results["modes"].items():
        batches = [row["batch"] for row in rows]
        left.plot(batches, [row["ms_per_image"] for row in rows], marker="o", label=mode)
        right.plot(batches, [row["images_per_s"] for row in rows], marker="o", label=mode)
    for axis, label in ((left, "ms per image"), (right, "images per second")):
        axis.set_xlabel("batch size")
        axis.set_ylabel(label)
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(f"SDXL-Lightning {STEPS} steps, {SIZE}², {results['dtype']} on {results['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def dry_run_cpu() -> int:
    """Build the full-size configs on the meta device (no memory, no compute) and report sizes."""
    unet, vae, scheduler = build_models("meta", torch.bfloat16)
    counts = {name: sum(p.numel() for p in model.parameters()) for name, model in (("unet", unet), ("vae", vae))}
    scheduler.set_timesteps(STEPS)
    print(
        f"UNet {counts['unet'] / 1e9:.3f} B parameters, VAE {counts['vae'] / 1e6:.1f} M parameters; "
        f"timesteps {scheduler.timesteps.tolist()}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, write JSON and a plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and 2 only, no torch.compile")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu_bench.json/.png")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch size (median)")
    parser.add_argument(
        "--compile-mode", default="default", help='torch.compile mode, e.g. "max-autotune-no-cudagraphs"'
    )
    parser.add_argument("--dry-run-cpu", action="store_true", help="build the configs on meta and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.dry_run_cpu:
        return dry_run_cpu()
    if not torch.cuda.is_available():
        print("No CUDA GPU: run this on a GPU machine (see README)")
        return 0

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dtype = torch.bfloat16
    sizes = [1, 2] if args.quick else [1, 2, 4, 8]
    unet, vae, scheduler = build_models("cuda", dtype)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": str(dtype).removeprefix("torch."),
        "resolution": [SIZE, SIZE],
        "steps": STEPS,
        "guidance_scale": 0,
        "weights": "random (same FLOPs as SDXL-Lightning)",
        "modes": {},
    }
    with torch.inference_mode():
        results["modes"]["eager"] = time_batches(unet, vae, scheduler, sizes, dtype, args.repeats)
        if not args.quick:
            compiled = torch.compile(unet, mode=args.compile_mode)
            results["modes"][f"compile ({args.compile_mode})"] = time_batches(
                compiled, vae, scheduler, sizes, dtype, args.repeats
            )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "gpu_bench.png")
    print(f"wrote {args.out / 'gpu_bench.json'} and {args.out / 'gpu_bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
