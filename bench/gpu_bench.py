"""GPU benchmark: the naive diffusers baseline against ours, in one run, SDXL-Lightning 4 steps at 1024².

Full-size SDXL models (UNet, VAE, both CLIP text encoders) with random weights: the same FLOPs
as the real SDXL-Lightning ones, nothing downloaded. Modes, each at batch 1, 4 and 8:

    naive     StableDiffusionXLPipeline as the SDXL-Lightning model card shows it: fp16, eager,
              trailing Euler, guidance 0, ``pipe([prompt] * n, num_inference_steps=4)``
              (its fp16 VAE is upcast to fp32 for the decode, as diffusers does)
    ours      LightningPipeline with every speed option on: bf16, fused QKV, channels_last,
              SDPA, torch.compile (warmed up first), CUDA graphs, whole-batch VAE decode,
              one text-encoder pass per distinct prompt (``--no-cuda-graphs``, ``--quantize``)
    service   ours behind the real Worker + GenerationQueue: ``batch`` concurrent one-image
              requests from different users, timed from submit to the last result

Per mode and batch: ms/image, images/s, peak GPU memory, and an MFU estimate (FLOPs counted
by torch's FlopCounterMode on the meta device, over the GPU's dense bf16 peak). A check compares
ours with eager bf16 LightningPipeline images of the same seeds (max and mean 8-bit difference).

    python bench/gpu_bench.py                 # all modes; writes bench/results/gpu_bench_<gpu>.json/.png
    python bench/gpu_bench.py --dry-run-cpu   # FLOPs of the full-size models on meta, then the whole
                                              # harness on the tiny model on CPU (no GPU needed)
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from generation.core.batch import Batch, BatchItem  # noqa: E402
from generation.model.model_config import ModelConfig  # noqa: E402
from generation.model.pipeline import LightningPipeline  # noqa: E402

logger = logging.getLogger("gpu_bench")

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 1024
STEPS = 4
PROMPT = "a lighthouse on a cliff at dawn, volumetric light, highly detailed"

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
}

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

# text_encoder/config.json (CLIP ViT-L/14 text) and text_encoder_2/config.json (OpenCLIP bigG text)
SDXL_TEXT_CONFIGS: tuple[dict[str, Any], dict[str, Any]] = (
    {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
     "projection_dim": 768, "hidden_act": "quick_gelu"},
    {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
     "projection_dim": 1280, "hidden_act": "gelu"},
)

SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "num_train_timesteps": 1000,
    "timestep_spacing": "trailing",
}


# -- models ------------------------------------------------------------------------------------


def build_sdxl(device: torch.device | str, dtype: torch.dtype) -> Any:
    """A full-size StableDiffusionXLPipeline with random weights, built directly on ``device``."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from generation.model.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()  # byte-level: token ids fit the real 49408-entry vocabulary
    texts = [
        CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **cfg)
        for cfg in SDXL_TEXT_CONFIGS
    ]
    with torch.device(device):  # initialise in place: fast on a GPU, free on meta
        unet = UNet2DConditionModel.from_config(SDXL_UNET_CONFIG)
        vae = AutoencoderKL.from_config(SDXL_VAE_CONFIG)
        text_encoder = CLIPTextModel(texts[0])
        text_encoder_2 = CLIPTextModelWithProjection(texts[1])
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=copy.deepcopy(tokenizer), unet=unet, scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG),
        add_watermarker=False,
    )
    if str(device) != "meta":
        pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flops_per_image(size: int = SIZE, steps: int = STEPS) -> dict[str, float]:
    """FLOPs of one image (batch 1): UNet x steps, VAE decode, both text encoders; counted on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    pipe = build_sdxl("meta", torch.bfloat16)
    latent = size // 8
    counts: dict[str, float] = {}
    with torch.device("meta"), torch.inference_mode():
        sample = torch.empty(1, 4, latent, latent)
        embeds = torch.empty(1, 77, 2048)
        added = {"text_embeds": torch.empty(1, 1280), "time_ids": torch.empty(1, 6)}
        ids = torch.zeros(1, 77, dtype=torch.long)
        for name, run in (
            ("unet_step", lambda: pipe.unet(sample, torch.tensor(999), encoder_hidden_states=embeds,
                                            added_cond_kwargs=added)),
            ("vae_decode", lambda: pipe.vae.decode(sample)),
            ("text_encoders", lambda: (pipe.text_encoder(ids), pipe.text_encoder_2(ids))),
        ):
            counter = FlopCounterMode(display=False)
            with counter:
                run()
            counts[name] = float(counter.get_total_flops())
    counts["image"] = counts["unet_step"] * steps + counts["vae_decode"] + counts["text_encoders"]
    return counts


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak for a GPU name, or None when it is not in the table."""
    for key, value in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if all(part in device_name for part in key.split()):
            return value
    return None


# -- the modes -----------------------------------------------------------------------------------


def naive_call(pipe: Any, n: int, size: int) -> Callable[[], list[Any]]:
    """The baseline as a user writes it from the model card (one list of prompts)."""
    return lambda: pipe([PROMPT] * n, num_inference_steps=STEPS, guidance_scale=0.0, height=size, width=size).images


def batch_of(n: int, size: int, seed0: int = 0) -> Batch:
    return Batch("txt2img", size, size, STEPS, tuple(BatchItem(PROMPT, "", seed0 + i) for i in range(n)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(run: Callable[[], Any], n: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Median of ``repeats`` timed runs after one untimed run; peak memory of the timed runs."""
    run()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"batch": n, "seconds_per_batch": seconds, "ms_per_image": 1000 * seconds / n,
            "images_per_s": n / seconds, "peak_memory_gib": peak, "runs_s": times}


async def service_run(ours: LightningPipeline, n: int, size: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """``n`` one-image requests from ``n`` users through Worker + GenerationQueue, batches of n."""
    from generation.scheduling.queue import GenerationQueue
    from generation.core.request import GenerationRequest
    from generation.scheduling.worker import Worker

    async with Worker(ours) as worker:
        sizes: list[int] = []
        worker.on_timing = lambda shape, count, seconds: sizes.append(count)

        async def once() -> float:
            queue = GenerationQueue(worker, max_batch_images=n, max_queued_images=n, max_queued_per_user=n)
            queue.start()
            requests = [GenerationRequest(PROMPT, width=size, height=size, steps=STEPS, seed=i, user_id=f"u{i}")
                        for i in range(n)]
            start = time.perf_counter()
            jobs = [queue.submit(r) for r in requests]
            await asyncio.gather(*(job.result() for job in jobs))
            elapsed = time.perf_counter() - start
            await queue.close()
            return elapsed

        await once()  # warm: the worker thread's first batch of this shape
        if device.type == "cuda":
            await worker.call(lambda: torch.cuda.reset_peak_memory_stats(device))
        times = [await once() for _ in range(repeats)]
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"batch": n, "seconds_per_batch": seconds, "ms_per_image": 1000 * seconds / n, "images_per_s": n / seconds,
            "peak_memory_gib": peak, "runs_s": times, "batch_sizes": sizes[-repeats:]}


def image_difference(first: list[Any], second: list[Any]) -> dict[str, float]:
    """Max and mean absolute difference of 8-bit pixels, and the share of pixels that differ."""
    import numpy as np

    a = np.stack([np.asarray(image, dtype=np.int16) for image in first])
    b = np.stack([np.asarray(image, dtype=np.int16) for image in second])
    diff = np.abs(a - b)
    return {"max": int(diff.max()), "mean": float(diff.mean()), "share_differing": float((diff > 0).mean())}


# -- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace, device: torch.device, size: int, batches: list[int]) -> dict[str, Any]:
    """Build the models, time every mode at every batch size, and check ours against eager."""
    from diffusers import EulerDiscreteScheduler

    from generation.model.tiny import build_tiny_pipeline

    tiny = device.type != "cuda"
    if tiny:
        naive = build_tiny_pipeline()
    else:
        naive = build_sdxl(device, torch.float16)  # the model card: fp16 everything, eager
    naive.scheduler = EulerDiscreteScheduler.from_config(naive.scheduler.config, timestep_spacing="trailing")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ours_pipe = copy.deepcopy(naive).to(dtype=dtype)
    eager_pipe = copy.deepcopy(ours_pipe)
    cuda = device.type == "cuda"
    options = ModelConfig(
        name="tiny", device=device.type, compile=args.compile if tiny else True,
        cuda_graphs=cuda and not args.no_cuda_graphs, quantize=args.quantize if cuda else "none",
        warmup_sizes=("1:1",), warmup_batch_sizes=tuple(batches),
        compile_cache_dir=str(args.cache_dir) if args.cache_dir else None,
    )
    base = size
    ours = LightningPipeline(ours_pipe, {STEPS: ours_pipe.unet}, model_id="ours", base_resolution=base, config=options)
    eager = LightningPipeline(eager_pipe, {STEPS: eager_pipe.unet}, model_id="eager", base_resolution=base)
    logger.info("warming up ours (compile=%s, cuda_graphs=%s) for batches %s", options.compile,
                options.cuda_graphs, batches)
    started = time.perf_counter()
    warm_seconds = 0.0
    results: dict[str, Any] = {"modes": {"naive": [], "ours": [], "service": []}}
    with torch.inference_mode():
        # the naive pipeline first: it runs on this thread, as a user's script would
        for n in batches:
            results["modes"]["naive"].append(time_mode(naive_call(naive, n, size), n, args.repeats, device))
            logger.info("naive batch %d: %.0f ms/image", n, results["modes"]["naive"][-1]["ms_per_image"])
        del naive
        if cuda:
            torch.cuda.empty_cache()
        ours.warm_up()
        warm_seconds = time.perf_counter() - started
        for n in batches:
            results["modes"]["ours"].append(time_mode(lambda n=n: ours.generate(batch_of(n, size)), n, args.repeats, device))
            logger.info("ours batch %d: %.0f ms/image", n, results["modes"]["ours"][-1]["ms_per_image"])
        check = image_difference(ours.generate(batch_of(2, size)), eager.generate(batch_of(2, size)))
    del eager
    service_batch = max(batches)
    results["modes"]["service"].append(asyncio.run(service_run(ours, service_batch, size, args.repeats, device)))
    logger.info("service batch %d: %.0f ms/image", service_batch, results["modes"]["service"][-1]["ms_per_image"])
    results["check_ours_vs_eager_same_dtype"] = check
    results["warm_up_s"] = warm_seconds
    results["options"] = {k: getattr(options, k) for k in (
        "compile", "compile_mode", "cuda_graphs", "channels_last", "fuse_qkv", "attention", "vae_decode",
        "dedupe_prompts", "quantize")}
    results["dtype"] = {"naive": "float16", "ours": str(dtype).removeprefix("torch.")}
    return results


def summarise(results: dict[str, Any], flops: dict[str, float] | None, peak: float | None) -> None:
    """Add MFU per row and the headline ratios (ours / naive images per second)."""
    for rows in results["modes"].values():
        for row in rows:
            row["mfu"] = (flops["image"] * row["images_per_s"] / (peak * 1e12)) if flops and peak else None
    naive = {row["batch"]: row for row in results["modes"]["naive"]}
    results["speedup_ours_vs_naive"] = {
        str(row["batch"]): row["images_per_s"] / naive[row["batch"]]["images_per_s"]
        for row in results["modes"]["ours"] if row["batch"] in naive
    }
    best_naive = max(row["images_per_s"] for row in results["modes"]["naive"])
    service = results["modes"]["service"][0]
    results["speedup_service_vs_best_naive"] = service["images_per_s"] / best_naive
    ours1 = next((row for row in results["modes"]["ours"] if row["batch"] == 1), None)
    if flops is None:  # the CPU dry run checks the harness, not the goals
        results["goals"] = None
        return
    results["goals"] = {
        "images_per_s_batched >= 12": max(row["images_per_s"] for row in results["modes"]["ours"]) >= 12,
        "single_image_ms <= 150": ours1 is not None and ours1["ms_per_image"] <= 150,
        "service_vs_naive >= 3x": results["speedup_service_vs_best_naive"] >= 3,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """ms/image and images/s against batch size, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, rows in results["modes"].items():
        batches = [row["batch"] for row in rows]
        marker = "s" if mode == "service" else "o"
        left.plot(batches, [row["ms_per_image"] for row in rows], marker=marker, label=mode)
        right.plot(batches, [row["images_per_s"] for row in rows], marker=marker, label=mode)
    for axis, label in ((left, "ms per image"), (right, "images per second")):
        axis.set_xlabel("batch size")
        axis.set_ylabel(label)
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
        axis.legend()
    w, h = results["resolution"]
    fig.suptitle(f"SDXL-Lightning {results['steps']} steps, {w}x{h} on {results['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, write JSON and a plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and the plot")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode and batch size (median)")
    parser.add_argument("--batches", default="1,4,8", help="batch sizes, comma-separated")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="ours without CUDA graphs")
    parser.add_argument("--quantize", choices=("none", "int8", "fp8"), default="none", help="ours with torchao weights")
    parser.add_argument("--cache-dir", type=Path, default=None, help="inductor cache (default: a temp dir)")
    parser.add_argument("--compile", action="store_true", help="--dry-run-cpu: compile on CPU as well (slow)")
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="count FLOPs on meta, run the harness on the tiny model on CPU, write to --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    flops = flops_per_image()
    logger.info("FLOPs per 1024² image: %.2f TFLOP (UNet step %.2f, VAE decode %.2f, text %.3f)",
                flops["image"] / 1e12, flops["unet_step"] / 1e12, flops["vae_decode"] / 1e12,
                flops["text_encoders"] / 1e12)
    if args.dry_run_cpu:
        device, size, batches, name = torch.device("cpu"), 128, [1, 2], "cpu-dry-run"
        args.repeats = 1
    elif not torch.cuda.is_available():
        print("No CUDA GPU: run this on a GPU machine, or check the harness with --dry-run-cpu")
        return 2
    else:
        device, size, batches = torch.device("cuda"), SIZE, [int(b) for b in args.batches.split(",")]
        name = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.cache_dir is None:
        args.cache_dir = Path(tempfile.mkdtemp(prefix="gpu-bench-inductor-"))
    results = {
        "benchmark": "gpu_bench",
        "command": "python bench/gpu_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "resolution": [size, size],
        "steps": STEPS,
        "guidance_scale": 0,
        "weights": "random (same FLOPs as SDXL-Lightning)" if device.type == "cuda" else "tiny random model (harness check)",
        "flops_per_1024_image": flops,
        "peak_bf16_tflops": peak_tflops(name) if device.type == "cuda" else None,
        **run(args, device, size, batches),
    }
    summarise(results, flops if device.type == "cuda" else None, results["peak_bf16_tflops"])
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    json_path, png_path = args.out / f"gpu_bench_{slug}.json", args.out / f"gpu_bench_{slug}.png"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, png_path)
    print(json.dumps({k: results[k] for k in ("speedup_ours_vs_naive", "speedup_service_vs_best_naive",
                                              "check_ours_vs_eager_same_dtype", "goals")}, indent=2))
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
