"""``imagine-bot download`` against a fake Hub on 127.0.0.1, then the loader on what it fetched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generation.model.download import plan, unreachable
from generation.model.preview import PreviewSettings, build_tiny_preview_vae, with_previews
from generation.model.pipeline import ModelConfig, build_tiny_pipeline, lightning_unet_filename, load_pipeline
from tests.fake_hub import FakeHub, serve

ROOT = Path(__file__).resolve().parents[1]


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """A tiny SDXL base (fp16 and full files, like the real repo), a VAE repo, a Lightning repo."""
    from safetensors.torch import save_file

    work = tmp_path_factory.mktemp("repos")
    base = build_tiny_pipeline(seed=0)
    base.save_pretrained(work / "base", variant="fp16")
    base.save_pretrained(work / "base")  # the full-precision files the download must skip
    (work / "base" / "README.md").write_text("base model card")
    vae = build_tiny_pipeline(seed=5).vae  # other weights than the base's VAE
    vae.save_pretrained(work / "vae")
    lightning = {}
    for steps, seed in ((4, 1), (8, 2)):
        torch.manual_seed(seed)
        state = {k: torch.randn_like(v) for k, v in base.unet.state_dict().items()}
        save_file(state, str(work / lightning_unet_filename(steps)))
        lightning[lightning_unet_filename(steps)] = (work / lightning_unet_filename(steps)).read_bytes()
    build_tiny_preview_vae(seed=3).save_pretrained(work / "taesd")  # the live previews' tiny autoencoder
    return {"fake/sdxl-base": _folder_files(work / "base"), "fake/vae": _folder_files(work / "vae"),
            "fake/lightning": lightning, "fake/taesd": _folder_files(work / "taesd")}


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HF_HOME": str(cwd / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    full.pop("HF_HUB_OFFLINE", None)
    full.update(env)
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=600)


def test_download_fetches_exactly_what_the_loader_needs(tmp_path: Path, repos: dict[str, dict[str, bytes]]) -> None:
    (tmp_path / "config.toml").write_text(
        '[model]\nbase_repo = "fake/sdxl-base"\nlightning_repo = "fake/lightning"\nvae_repo = "fake/vae"\n'
        '[preview]\nvae = "fake/taesd"\n')
    target = tmp_path / "weights"
    env = {"PYTHONPATH": str(ROOT)}
    with serve(FakeHub(repos)) as hub:
        proc = _run(["download", "--steps", "4", "--to", str(target)], tmp_path,
                    HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", **env)
    assert proc.returncode == 0, proc.stderr
    assert f'path = "{target.resolve()}"' in proc.stdout and "steps = [4]" in proc.stdout
    # only the 4-step UNet; only the fp16 text encoders; no base UNet or VAE weights, no card
    assert hub.fetched("fake/lightning") == {lightning_unet_filename(4)}
    base_fetched = hub.fetched("fake/sdxl-base")
    assert "model_index.json" in base_fetched and "unet/config.json" in base_fetched
    assert {p for p in base_fetched if p.endswith(".safetensors")} == {
        "text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors"}
    assert not any(p.startswith("vae/") for p in base_fetched) and "README.md" not in base_fetched
    assert (target / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        repos["fake/vae"]["diffusion_pytorch_model.safetensors"]

    # the loader, with model.path at that folder, uses the downloaded VAE and Lightning UNet
    pipeline = load_pipeline(ModelConfig(path=str(target), steps=(4,), device="cpu"))
    from safetensors.torch import load_file

    expected_vae = load_file(str(target / "vae" / "diffusion_pytorch_model.safetensors"))
    vae_state = pipeline.pipe.vae.state_dict()
    assert all(torch.equal(vae_state[k].float(), v.float()) for k, v in expected_vae.items())
    expected_unet = load_file(str(target / lightning_unet_filename(4)))
    key = next(iter(expected_unet))
    assert torch.equal(pipeline.unet_for(4).state_dict()[key].float(), expected_unet[key].float())

    # live previews (on by default): the tiny autoencoder went into preview_vae/, and the loader
    # takes it from there, offline, whatever preview.vae names
    assert hub.fetched("fake/taesd") == {"config.json", "diffusion_pytorch_model.safetensors"}
    model = ModelConfig(path=str(target), steps=(4,), device="cpu")
    previewing = with_previews(model, loader=lambda m: pipeline, settings=PreviewSettings(vae="not/reachable"))
    assert previewing.previewer is not None
    expected_taesd = load_file(str(target / "preview_vae" / "diffusion_pytorch_model.safetensors"))
    taesd_state = previewing.previewer.vae.state_dict()
    assert expected_taesd and all(torch.equal(taesd_state[k].float(), v.float()) for k, v in expected_taesd.items())


def test_download_again_fetches_nothing_new(tmp_path: Path, repos: dict[str, dict[str, bytes]]) -> None:
    (tmp_path / "config.toml").write_text(
        '[model]\nbase_repo = "fake/sdxl-base"\nlightning_repo = "fake/lightning"\nvae_repo = "fake/vae"\n'
        '[preview]\nenabled = false\n')
    target = tmp_path / "w"
    with serve(FakeHub(repos)) as hub:
        first = _run(["download", "--to", str(target)], tmp_path, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
                     PYTHONPATH=str(ROOT))
        assert first.returncode == 0, first.stderr
        count = len([r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]])
        again = _run(["download", "--to", str(target)], tmp_path, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
                     PYTHONPATH=str(ROOT))
    assert again.returncode == 0, again.stderr
    assert len([r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]) == count


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_download_offline_fails_fast_with_the_reason(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    proc = _run(["download", "--to", str(tmp_path / "w")], tmp_path, HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0",
                PYTHONPATH=str(ROOT))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagine-bot: Cannot reach")
    assert endpoint in lines[0] and "refused" in lines[0].lower() and "HF_ENDPOINT" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "w").exists()

    offline = _run(["download"], tmp_path, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    assert offline.returncode == 2 and "HF_HUB_OFFLINE" in offline.stderr


def test_unreachable_names_a_failed_dns_lookup() -> None:
    reason = unreachable("https://no-such-host.invalid")
    assert reason is not None and "DNS lookup of no-such-host.invalid" in reason


def test_plan_uses_the_base_vae_only_without_a_vae_repo() -> None:
    with_fix = plan("b", "l", "madebyollin/sdxl-vae-fp16-fix", (8, 4, 4))
    assert [f.repo for f in with_fix] == ["b", "madebyollin/sdxl-vae-fp16-fix", "l"]
    assert with_fix[1].subdir == "vae" and not any(p.startswith("vae/") for p in with_fix[0].patterns)
    assert with_fix[2].patterns == (lightning_unet_filename(4), lightning_unet_filename(8))
    base_vae = plan("b", "l", None, (4,))
    assert [f.repo for f in base_vae] == ["b", "l"]
    assert "vae/*fp16*.safetensors" in base_vae[0].patterns
    previews = plan("b", "l", None, (4,), "madebyollin/taesdxl")
    assert previews[-1].repo == "madebyollin/taesdxl" and previews[-1].subdir == "preview_vae"


def test_run_without_network_says_why_at_once(tmp_path: Path) -> None:
    """No --model tiny, no cache, the Hub unreachable: one line naming the reason, no retries."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    proc = _run(["generate", "a fox", "-q"], tmp_path, HF_ENDPOINT=endpoint, PYTHONPATH=str(ROOT))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagine-bot: The SDXL-Lightning weights are not on this machine"), proc.stderr
    assert str(tmp_path / "hf-home") in lines[0]  # the cache it looked in (HF_HOME)
    assert "`imagine-bot download`" in lines[0] and "`make demo`" in lines[0]
    assert f"The Hub is unreachable: cannot connect to 127.0.0.1:{endpoint.rsplit(':', 1)[1]}" in lines[0]
    assert "HF_HUB_OFFLINE" not in proc.stderr  # the user never set it
    assert "Retry" not in proc.stderr


def test_download_eval_fetches_clip_and_the_inception_weights(tmp_path: Path) -> None:
    """--eval: the CLIP model into the HF cache, the FID Inception file into torch's hub cache;
    both then load with the network off."""
    from generation.quality.clip_score import build_tiny_clip
    from generation.quality.download import INCEPTION_URL

    model, (tokenizer, processor) = build_tiny_clip()
    clip_dir = tmp_path / "clip"
    model.save_pretrained(clip_dir)
    tokenizer.save_pretrained(clip_dir)
    processor.save_pretrained(clip_dir)
    (clip_dir / "README.md").write_text("not fetched")
    weights = b"inception weights stand-in"
    name = INCEPTION_URL.rsplit("/", 1)[-1]
    repos = {"fake/clip": _folder_files(clip_dir), "fake/inception": {name: weights}}
    (tmp_path / "config.toml").write_text('[eval]\nclip_model = "fake/clip"\n')
    torch_home = tmp_path / "torch-home"
    with serve(FakeHub(repos)) as hub:
        proc = _run(["download", "--eval"], tmp_path, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
                    PYTHONPATH=str(ROOT), TORCH_HOME=str(torch_home),
                    IMAGINE_INCEPTION_URL=f"{hub.url}/fake/inception/resolve/main/{name}")
    assert proc.returncode == 0, proc.stderr
    assert "CLIP fake/clip:" in proc.stdout and "Inception-v3 (FID):" in proc.stdout
    assert "README.md" not in hub.fetched("fake/clip") and "model.safetensors" in hub.fetched("fake/clip")
    assert (torch_home / "hub" / "checkpoints" / name).read_bytes() == weights
    check = ("from transformers import CLIPModel; m = CLIPModel.from_pretrained('fake/clip'); "
             "print(m.config.projection_dim)")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    offline = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == "16"


def _tiny_upscaler_file() -> bytes:
    """A Real-ESRGAN compact network (2x) with random weights, saved as its releases are."""
    import io

    from generation.tools.upscale import SRVGGNetCompact

    torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save({"params": SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).state_dict()}, buffer)
    return buffer.getvalue()


def test_download_fetches_the_hub_upscaler_where_the_bot_looks(tmp_path: Path,
                                                               repos: dict[str, dict[str, bytes]]) -> None:
    """upscale.model = "owner/repo/dir/file.pth": `imagine-bot download` puts the file at
    models/upscalers/file.pth (config.upscale.model_path), the upscaler loads from it, and a
    second run fetches nothing; a file the repository lacks is one clear line."""
    from bot.config import UpscaleConfig
    from generation.tools.upscale import NetworkUpscaler, load_upscaler

    weights = _tiny_upscaler_file()
    hub_repos = {**repos, "fake/esrgan": {"weights/tiny_x2.pth": weights, "README.md": b"card"}}
    model = "fake/esrgan/weights/tiny_x2.pth"
    (tmp_path / "config.toml").write_text(
        '[model]\nbase_repo = "fake/sdxl-base"\nlightning_repo = "fake/lightning"\nvae_repo = "fake/vae"\n'
        f'[upscale]\nmodel = "{model}"\n[preview]\nvae = "fake/taesd"\n')
    env = {"HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT)}
    with serve(FakeHub(hub_repos)) as hub:
        first = _run(["download", "--steps", "4", "--to", str(tmp_path / "w")], tmp_path, HF_ENDPOINT=hub.url, **env)
        assert first.returncode == 0, first.stderr
        assert hub.fetched("fake/esrgan") == {"weights/tiny_x2.pth"}
        count = len([r for r in hub.requests if "/fake/esrgan/" in r[1]])
        again = _run(["download", "--steps", "4", "--to", str(tmp_path / "w")], tmp_path, HF_ENDPOINT=hub.url, **env)
        assert again.returncode == 0, again.stderr
        assert len([r for r in hub.requests if "/fake/esrgan/" in r[1]]) == count
        (tmp_path / "config.toml").write_text(f'[upscale]\nmodel = "fake/esrgan/nope_x2.pth"\n'
                                              '[model]\nbase_repo = "fake/sdxl-base"\nlightning_repo = "fake/lightning"\n'
                                              'vae_repo = "fake/vae"\n[preview]\nvae = "fake/taesd"\n')
        missing = _run(["download", "--steps", "4", "--to", str(tmp_path / "w")], tmp_path, HF_ENDPOINT=hub.url, **env)
    target = UpscaleConfig(model=model).model_path(tmp_path / "models")
    assert target == tmp_path / "models" / "upscalers" / "tiny_x2.pth"
    assert target.read_bytes() == weights and str(Path("models/upscalers/tiny_x2.pth")) in first.stdout
    upscaler = load_upscaler(target)
    assert isinstance(upscaler, NetworkUpscaler) and upscaler.scale == 2
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    line = missing.stderr.strip().splitlines()[-1]  # after the model's progress bars
    assert "nope_x2.pth" in line and "fake/esrgan" in line
