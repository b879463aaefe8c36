"""imagine-bot eval: the metrics on synthetic image sets with tiny random extractors, the whole
command offline with --model tiny (report, grid, stored figures, resume), --compare, and the
bundled prompt set. MLflow is tests/test_eval_tracking.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from bot.__main__ import main
from generation.quality.extractors import TinyExtractor, extract, image_files, load_batch
from generation.quality.metrics import FeatureSet, bootstrap, figures, fid, precision_recall
from generation.quality.prompt_sets import load_prompt_set

torchmetrics = pytest.importorskip("torchmetrics")
ROOT = Path(__file__).resolve().parent.parent


class FeaturesOf(torch.nn.Module):
    """The extractor's features alone: what torchmetrics' FID/KID take as ``feature``."""

    def __init__(self, extractor: TinyExtractor, part: int = 0) -> None:
        super().__init__()
        self.extractor, self.part = extractor, part
        self.num_features = extractor.num_features if part == 0 else 10

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images)[self.part]


def _images(n: int, low: int, high: int, seed: int) -> torch.Tensor:
    """n noise images of 32 x 32 whose pixel values lie in [low, high)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def _features(images: torch.Tensor) -> FeatureSet:
    return FeatureSet(*extract(TinyExtractor(), [images]))


# -- the metrics -----------------------------------------------------------------------------------


def test_fid_and_kid_rank_sets_built_to_differ_and_equal_the_library_called_directly() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real = _images(48, 0, 160, seed=1)
    near = _images(48, 0, 160, seed=2)  # the same distribution, other samples
    shifted = _images(48, 60, 220, seed=3)  # brighter
    far = _images(48, 120, 256, seed=4)  # brighter still
    r = _features(real)
    found = {name: figures(_features(x), r, seed=7) for name, x in (("near", near), ("shifted", shifted),
                                                                     ("far", far))}
    assert found["near"]["fid"] < found["shifted"]["fid"] < found["far"]["fid"]
    assert found["near"]["kid"] < found["shifted"]["kid"] < found["far"]["kid"]
    assert abs(fid(r.features, r.features)) < 1e-6  # identical sets
    assert found["near"]["precision"] > found["far"]["precision"] == 0.0

    # the report's path (features once, handed over) equals torchmetrics on the images
    direct = FrechetInceptionDistance(feature=FeaturesOf(TinyExtractor()))
    direct.update(real, real=True)
    direct.update(far, real=False)
    assert found["far"]["fid"] == pytest.approx(float(direct.compute()), rel=1e-5)
    kid = KernelInceptionDistance(feature=FeaturesOf(TinyExtractor()), subsets=100, subset_size=48)
    kid.update(real, real=True)
    kid.update(far, real=False)
    torch.manual_seed(7)
    mean, std = kid.compute()
    assert (found["far"]["kid"], found["far"]["kid_std"]) == pytest.approx((float(mean), float(std)), rel=1e-5)


def test_inception_score_equals_the_library_and_grows_with_confident_varied_classes() -> None:
    from torchmetrics.image.inception import InceptionScore

    images = torch.cat([_images(16, 0, 100, 5), _images(16, 150, 256, 6)])
    ours = figures(_features(images), None, seed=3)
    assert set(ours) == {"inception_score", "inception_std"}  # no refs: no FID, KID, P/R
    direct = InceptionScore(feature=FeaturesOf(TinyExtractor(), part=1), splits=10)
    direct.update(images)
    torch.manual_seed(3)
    mean, std = direct.compute()
    assert (ours["inception_score"], ours["inception_std"]) == pytest.approx((float(mean), float(std)), rel=1e-5)
    # logits: one confident class for all vs confident and spread over 10 classes (10 splits of 20)
    same = FeatureSet(torch.zeros(200, 4), torch.eye(10)[[0] * 200] * 30)
    spread = FeatureSet(torch.zeros(200, 4), torch.eye(10)[[i % 10 for i in range(200)]] * 30)
    assert figures(same, None)["inception_score"] == pytest.approx(1.0, abs=1e-3)
    assert figures(spread, None)["inception_score"] > 5


def test_precision_and_recall_follow_the_manifolds() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(60, 8, generator=g)
    assert precision_recall(real, real) == (1.0, 1.0)
    narrow = real[:, :] * 0.05  # all generated samples inside the real manifold, covering little of it
    precision, recall = precision_recall(narrow, real)
    assert precision == 1.0 and recall < 0.5
    assert precision_recall(real + 100.0, real) == (0.0, 0.0)
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(real[:3], real)


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_the_seed() -> None:
    r, x = _features(_images(32, 0, 160, 1)), _features(_images(32, 60, 220, 2))

    def statistic(generated: FeatureSet, real: FeatureSet | None, picked: torch.Tensor) -> dict[str, float]:
        return {"fid": fid(generated.features, real.features)}  # type: ignore[union-attr]

    first = bootstrap(x, r, statistic, rounds=30, seed=4)
    assert first == bootstrap(x, r, statistic, rounds=30, seed=4)
    low, high = first["fid"]
    assert 0 < low < high and low < fid(x.features, r.features) * 1.5


def test_prompt_sets_bundled_file_and_tsv(tmp_path: Path) -> None:
    bundled = load_prompt_set()
    assert bundled.name == "parti-mini" and len(bundled.prompts) == 48 and bundled.prompt_for(48) == bundled.prompts[0]
    assert "a corgi" in bundled.prompts and not any("\t" in p for p in bundled.prompts)
    table = tmp_path / "PartiPrompts.tsv"
    table.write_text("Prompt\tCategory\tChallenge\tNote\nbond\tAbstract\tBasic\t\na red fox\tAnimals\tBasic\t\n")
    assert load_prompt_set(table).prompts == ("bond", "a red fox")
    plain = tmp_path / "mine.txt"
    plain.write_text("# my prompts\n\na lighthouse\n  a cat  \n")
    assert load_prompt_set(plain).prompts == ("a lighthouse", "a cat")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompt_set(tmp_path / "empty.txt")


def test_the_bot_starts_without_the_evaluation_libraries(tmp_path: Path) -> None:
    """torchmetrics and MLflow load inside `imagine-bot eval` only, never with the bot."""
    code = ("import sys\nimport bot.app, bot.cli, bot.service\nfrom bot.cli import _parser\n_parser()\n"
            "bad = [m for m in ('torchmetrics', 'mlflow', 'torch_fidelity', 'generation.quality.tracking',"
            " 'generation.quality.metrics') if m in sys.modules]\nprint(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- the command, offline ------------------------------------------------------------------------


def _refs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        Image.effect_noise((48, 48), 30 + 10 * i).convert("RGB").save(folder / f"real-{i}.png")
    return folder


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One offline run of 4 images against 6 real ones (shared by the tests below)."""
    root = tmp_path_factory.mktemp("eval")
    config = root / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{root / "data"}"\n')
    refs = _refs(root / "refs")
    out = root / "run"
    mlflow_before = "mlflow" in sys.modules
    code = main(["eval", "--model", "tiny", "--n", "4", "--batch", "3", "--refs", str(refs), "--out", str(out),
                 "--config", str(config), "-q"])
    assert code == 0
    assert mlflow_before or "mlflow" not in sys.modules  # no [eval] mlflow_uri: MLflow never loaded
    return {"root": root, "config": config, "refs": refs, "out": out,
            "report": json.loads((out / "report.json").read_text())}


@pytest.mark.slow
def test_eval_tiny_writes_report_grid_and_stores_the_figures(first_run: dict[str, Any],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from torchmetrics.image.fid import FrechetInceptionDistance

    from storage import Database
    from storage.model_versions import evals

    report, out = first_run["report"], first_run["out"]
    assert report["model_id"] == "tiny-random-sdxl" and report["n"] == 4 and report["made"] == 4
    assert report["prompt_set"] == "parti-mini" and report["extractor"] == "tiny+clip:tiny"
    assert set(report["figures"]) == {"fid", "kid", "kid_std", "inception_score", "inception_std", "clip_score",
                                      "precision", "recall"}
    assert [i["seed"] for i in report["images"]] == [0, 1, 2, 3]
    assert [i["prompt"] for i in report["images"]] == list(load_prompt_set().prompts[:4])
    assert report["figures"]["clip_score"] == pytest.approx(sum(i["clip"] for i in report["images"]) / 4)
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (4 * 256, 256)

    # the report's FID is torchmetrics' on the files it names and the refs
    generated = load_batch([out / i["file"] for i in report["images"]], TinyExtractor.image_size)
    real = load_batch(image_files(first_run["refs"]), TinyExtractor.image_size)
    direct = FrechetInceptionDistance(feature=FeaturesOf(TinyExtractor()))
    direct.update(real, real=True)
    direct.update(generated, real=False)
    assert report["figures"]["fid"] == pytest.approx(float(direct.compute()), rel=1e-5)

    async def stored() -> list[Any]:
        async with Database.open(first_run["root"] / "data" / "imagine.db") as db:
            return await evals(db)

    (row,) = [r for r in asyncio.run(stored()) if r.report == str(out / "report.json")][:1]
    assert row.figures() == pytest.approx(report["figures"]) and row.n == 4 and row.prompt_set == "parti-mini"
    assert main(["models", "--config", str(first_run["config"])]) == 0
    listing = capsys.readouterr().out
    # the tiny model's version is the SHA-256 of its weights (issue 25), the catalogue comes first
    assert f"tiny-random-sdxl @{report['checkpoint_hash'][:12]}" in listing and len(report["checkpoint_hash"]) == 64
    assert f"fid {report['figures']['fid']:.4g}" in listing
    assert listing.startswith("sdxl-lightning (sdxl-lightning,")  # the configured catalogue ([model] unset), then versions


@pytest.mark.slow
def test_a_run_stopped_half_way_makes_only_the_missing_images(first_run: dict[str, Any], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "again"
    shutil.copytree(first_run["out"], out)
    images = out / "images"
    kept = {n: (images / f"{n:05d}.png").stat() for n in (0, 2)}
    with Image.open(images / "00001.png") as before:
        original = torch.tensor(list(before.convert("RGB").tobytes()), dtype=torch.int16)
    for n in (1, 3):  # as if the run had been killed before these were written
        (images / f"{n:05d}.png").unlink()
    (images / "00003.png.partial").write_bytes(b"half a png")  # what a kill mid-write leaves
    args = ["eval", "--model", "tiny", "--n", "4", "--refs", str(first_run["refs"]), "--out", str(out),
            "--config", str(first_run["config"]), "-q"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["made"] == 2 and "2 made, 2 reused" in capsys.readouterr().out
    for n, stat in kept.items():  # untouched
        again = (images / f"{n:05d}.png").stat()
        assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    with Image.open(images / "00001.png") as after:  # the same seed makes the same image (a batch of
        remade = torch.tensor(list(after.convert("RGB").tobytes()), dtype=torch.int16)  # another size:
    assert (remade - original).abs().max() <= 2  # float rounding moves a pixel value by one at most)
    assert not (images / "00003.png.partial").exists() and (images / "00003.png").is_file()
    assert report["figures"]["fid"] == pytest.approx(first_run["report"]["figures"]["fid"], rel=1e-4)

    # another seed in the same folder is refused, not mixed in
    assert main([*args, "--seed", "9"]) == 2
    assert "holds a run with seed 0, not 9" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_gives_intervals_prompt_differences_and_a_plot(first_run: dict[str, Any], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ab"
    for side in ("a-tiny", "b-tiny"):  # both resume from the first run's images: only measuring here
        shutil.copytree(first_run["out"], out / side)
    assert main(["eval", "--compare", "tiny", "tiny", "--n", "4", "--refs", str(first_run["refs"]),
                 "--bootstrap", "8", "--out", str(out), "--config", str(first_run["config"]), "-q"]) == 0
    text = capsys.readouterr().out
    result = json.loads((out / "compare.json").read_text())
    assert result["a"]["figures"] == result["b"]["figures"]  # one model, same prompts and seeds
    assert [row["difference"] for row in result["clip_by_prompt"]] == [0.0] * 4
    for side in (result["a"], result["b"]):
        assert set(side["intervals"]) >= {"fid", "kid", "inception_score", "clip_score", "precision", "recall"}
        low, high = side["intervals"]["clip_score"]
        assert low <= side["figures"]["clip_score"] <= high
    assert "fid" in text and "CLIP score by prompt, B - A" in text
    with Image.open(out / "history.png") as plot:
        assert plot.size[0] > 300


def test_eval_refuses_bad_options_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    base = ["eval", "--config", str(config), "--out", str(tmp_path / "o")]
    assert main([*base, "--model", "tiny", "--n", "1"]) == 2
    assert "--n must be 2 or more" in capsys.readouterr().err
    assert main([*base, "--model", "tiny", "--refs", str(tmp_path / "nope")]) == 2
    assert "is not a folder of real images" in capsys.readouterr().err
    assert main([*base, "--compare", "tiny", "flux"]) == 2
    said = capsys.readouterr().err  # names what would do: the catalogue and the kinds
    assert "'flux' is neither a model of the catalogue" in said and "tiny-flux" in said


@pytest.mark.slow
def test_compare_takes_models_of_the_catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[models.NAME] entries (here two tiny kinds) are compared by name, offline."""
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
                      '[models.base]\nkind = "tiny"\ndefault = true\n[models.cand]\nkind = "tiny-flux"\n')
    out = tmp_path / "ab"
    assert main(["eval", "--compare", "base", "cand", "--n", "2", "--bootstrap", "4", "--out", str(out),
                 "--config", str(config), "-q"]) == 0, capsys.readouterr().err
    result = json.loads((out / "compare.json").read_text())
    assert result["a"]["model_id"] == "tiny-random-sdxl" and result["b"]["model_id"] == "tiny-random-flux"
    for i in range(2):  # two models, two sets of images, each stored under its own model version
        with Image.open(out / "a-base" / "images" / f"{i:05d}.png") as a, \
                Image.open(out / "b-cand" / "images" / f"{i:05d}.png") as b:
            assert a.tobytes() != b.tobytes()
    assert "tiny-random-sdxl@" in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    """kill -9 while images are being made; the next run makes only the rest."""
    import os
    import signal
    import time

    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    out = tmp_path / "run"
    args = ["eval", "--model", "tiny", "--n", "6", "--batch", "1", "--out", str(out), "--config", str(config), "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bot", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while len(list((out / "images").glob("*.png"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no images within 240 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    made_before = {p.name: p.stat() for p in (out / "images").glob("*.png")}
    assert 2 <= len(made_before) < 6 and not (out / "report.json").exists()

    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["made"] == 6 - len(made_before) and len(list((out / "images").glob("*.png"))) == 6
    for name, stat in made_before.items():
        again = (out / "images" / name).stat()
        assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert not list((out / "images").glob("*.partial"))
