"""The evaluation loop (xraygpt.eval.evaluation) and test.py, with a fake and a tiny model."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import Dataset, IterableDataset

from xraygpt.common.config import REPO_ROOT, Config, ConfigError
from xraygpt.common.generation import GenerationOptions
from xraygpt.data.annotations import Annotation
from xraygpt.eval.evaluation import (
    compute_baselines,
    generate_reports,
    merge_shards,
    raw_reports,
    skipped_image_ids,
)

PROMPT = "<Img><ImageHere></Img> Describe the given chest x-ray image in detail."
OPTIONS = GenerationOptions(max_new_tokens=6)

# Tiny models run much faster on one thread than on two cores shared with other jobs.
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


# ----------------------------------------------------------------- a fake model


class Items(Dataset):
    """Map-style samples whose image encodes the index."""

    def __init__(self, n: int, ids: list[str] | None = None) -> None:
        self.ids = ids or [f"img{i}" for i in range(n)]
        self.annotations = [Annotation(i, f"Raw report of {i}.") for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": torch.full((3, 4, 4), float(index)),
            "caption": f"report of {self.ids[index]}",
            "image_id": self.ids[index],
        }


class Stream(IterableDataset):
    def __init__(self, n: int) -> None:
        self.items = Items(n)

    def __iter__(self):
        return (self.items[i] for i in range(len(self.items)))


class Echo(torch.nn.Module):
    """Follows the model.generate contract; the answer names the image's value."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def generate(self, images: torch.Tensor, prompts: list[str], **kwargs: Any) -> list[str]:
        self.calls.append({"batch": images.shape[0], "prompts": prompts, **kwargs})
        return [f" finding {int(img[0, 0, 0])} " for img in images]


def test_generation_settings() -> None:
    # checked when the config loads, before any model is built
    with pytest.raises(ConfigError, match="run.eval_prompt must hold <ImageHere> exactly once"):
        Config(user_config={"run": {"eval_prompt": "Describe the image."}})
    with pytest.raises(ConfigError, match="num_beams"):
        Config(user_config={"run": {"num_beams": 0}})
    run = Config(user_config={"run": {"num_beams": 1, "max_new_tokens": 6}}).run_cfg
    assert GenerationOptions.from_run_config(run) == OPTIONS
    assert OPTIONS.as_kwargs() == {
        "num_beams": 1, "max_new_tokens": 6, "min_new_tokens": 1, "repetition_penalty": 1.0,
        "length_penalty": 1.0, "do_sample": False, "temperature": 1.0, "top_p": 0.9,
    }  # fmt: skip


def test_loop_keeps_split_order_and_passes_the_settings() -> None:
    model = Echo()
    out = generate_reports(model, Items(7), PROMPT, OPTIONS, batch_size=3, progress=False)
    assert [r["index"] for r in out] == list(range(7))
    assert [r["generated"] for r in out] == [f"finding {i}" for i in range(7)]
    assert out[2] == {
        "index": 2,
        "image_id": "img2",
        "generated": "finding 2",
        "caption": "report of img2",
    }
    assert [c["batch"] for c in model.calls] == [3, 3, 1]
    assert model.calls[0]["prompts"] == [PROMPT] * 3
    assert model.calls[0]["do_sample"] is False and model.calls[0]["max_new_tokens"] == 6


@pytest.mark.parametrize("make", [Items, Stream], ids=["map", "iterable"])
def test_shards_merge_to_the_single_process_result(make) -> None:
    whole = generate_reports(
        Echo(), make(9), PROMPT, OPTIONS, batch_size=4, max_samples=8, progress=False
    )
    assert len(whole) == 8
    shards = [
        generate_reports(
            Echo(),
            make(9),
            PROMPT,
            OPTIONS,
            batch_size=2,
            max_samples=8,
            rank=r,
            world_size=3,
            progress=False,
        )
        for r in range(3)
    ]
    assert [len(s) for s in shards] == [3, 3, 2]
    assert merge_shards(shards) == whole


def test_merge_drops_repeated_images() -> None:
    # a bad image is replaced by the next readable sample, which then shows up twice
    shards = [
        [{"index": 0, "image_id": "a"}, {"index": 2, "image_id": "c"}],
        [{"index": 1, "image_id": "c"}, {"index": 3, "image_id": "d"}],
    ]
    assert [r["image_id"] for r in merge_shards(shards)] == ["a", "c", "d"]


def test_bad_loop_arguments() -> None:
    # run.batch_size_eval and run.max_samples are checked when the config loads
    with pytest.raises(ConfigError, match="batch_size_eval"):
        Config(user_config={"run": {"batch_size_eval": 0}})
    with pytest.raises(ConfigError, match="max_samples"):
        Config(user_config={"run": {"max_samples": 0}})

    class Short(Echo):
        def generate(self, images, prompts, **kwargs):
            return ["only one"]

    with pytest.raises(RuntimeError, match="returned 1 answers for 2 images"):
        generate_reports(Short(), Items(2), PROMPT, OPTIONS, batch_size=2, progress=False)


def test_baselines_from_the_train_split() -> None:
    train = Items(3, ["t0", "t1", "t2"])
    train.annotations = [Annotation("t0", "B."), Annotation("t1", "A."), Annotation("t2", "B.")]
    reports, skipped = compute_baselines(train, Items(2), ["img0", "img1"])
    assert reports == {"most_frequent": ["B.", "B."]} and skipped == {}
    reports, skipped = compute_baselines(None, Items(2), ["img0"], nearest_neighbour=True)
    assert reports == {}
    assert skipped == {
        "baseline most_frequent": "the dataset has no train split",
        "baseline nearest_neighbour": "the dataset has no train split",
    }
    assert raw_reports(Items(1)) == {"img0": "Raw report of img0."}
    assert raw_reports(Stream(1)) is None


# ---------------------------------------------------------- the tiny model, test.py


def _test_entry():
    """The repository's test.py as a module ("import test" could find the stdlib's package)."""
    spec = importlib.util.spec_from_file_location("xraygpt_test_entry", REPO_ROOT / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def phantom(make_phantom: Callable[..., Path]) -> Path:
    return make_phantom(20)


def eval_config(
    phantom: Path, out: Path, small_model: dict[str, Any], **run: Any
) -> dict[str, Any]:
    """The job: ``small_model`` (the ``small_model_overrides`` fixture) on ``phantom``."""
    return {
        "model": {"arch": "mini_gpt4", "model_type": "tiny", **small_model},
        "datasets": {
            "openi": {
                "build_info": {"storage": str(phantom)},
                # eval processing on train too: these tests generate from the train split,
                # whose random crops would make the reports differ from call to call
                "vis_processor": {
                    "train": {"name": "blip2_image_eval", "image_size": 64},
                    "eval": {"name": "blip2_image_eval", "image_size": 64},
                },
                "text_processor": {
                    "train": {"name": "blip_caption"},
                    "eval": {"name": "blip_caption"},
                },
            }
        },
        "run": {
            "task": "image_text_pretrain",
            "device": "cpu",
            "output_dir": str(out),
            "batch_size_eval": 2,
            "max_new_tokens": 6,
            "num_workers": 0,
            "meteor": False,
            "nn_baseline": True,
            **run,
        },
    }


def test_tiny_model_answers_do_not_depend_on_the_batch_size(
    phantom: Path, tmp_path: Path, small_model_overrides: dict[str, Any]
) -> None:
    from xraygpt.common.config import Config
    from xraygpt.train.tasks.image_text_pretrain import ImageTextPretrainTask

    cfg = Config(user_config=eval_config(phantom, tmp_path, small_model_overrides))
    task = ImageTextPretrainTask.setup_task(cfg)
    train = task.build_datasets(cfg)["openi"]["train"]
    torch.manual_seed(0)
    model = task.build_model(cfg).eval()
    # At random init the Q-Former's output hardly depends on the image, so every report
    # would be the same and the test could not tell them apart: add a strong, row-wise
    # image-dependent signal (a fixed random projection of the pixels).
    encode = model.encode_img
    pixels = train[0]["image"].numel()
    width = model.llama_proj.out_features
    projection = torch.randn(pixels, width, generator=torch.Generator().manual_seed(0))

    def encode_img(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, atts = encode(images)
        signal = images.flatten(1) @ projection / pixels**0.5
        return embeds + 3 * signal[:, None, :], atts

    model.encode_img = encode_img

    one = generate_reports(
        model, train, PROMPT, OPTIONS, batch_size=1, max_samples=4, progress=False
    )
    four = generate_reports(
        model, train, PROMPT, OPTIONS, batch_size=4, max_samples=4, progress=False
    )
    three = generate_reports(
        model, train, PROMPT, OPTIONS, batch_size=3, max_samples=4, progress=False
    )
    assert len({r["generated"] for r in one}) > 1  # the reports differ from image to image
    assert [r["generated"] for r in one] == [r["generated"] for r in four]
    assert [r["generated"] for r in one] == [r["generated"] for r in three]


def test_test_py_end_to_end(
    phantom: Path,
    tmp_path: Path,
    small_model_overrides: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    test_entry = _test_entry()
    monkeypatch.chdir(REPO_ROOT)  # the model config names prompts/ relative to the repo
    cfg_path = tmp_path / "tiny_eval.yaml"
    cfg_path.write_text(
        yaml.safe_dump(eval_config(phantom, tmp_path / "output", small_model_overrides))
    )
    results = test_entry.main(["--cfg-path", str(cfg_path), "--options", "run.max_samples=3"])
    job = tmp_path / "output" / "tiny_eval"
    lines = [json.loads(x) for x in (job / "predictions.jsonl").read_text().splitlines()]
    annotations = json.loads((phantom / "filter_cap.json").read_text())["annotations"]
    test_ids = [a["image_id"] for a in annotations if a["split"] == "test"]
    assert [x["image_id"] for x in lines] == test_ids[:3]
    first = lines[0]
    assert set(first) == {
        "image_id", "prompt", "generated", "reference", "generated_labels", "reference_labels",
        "baselines",
    }  # fmt: skip
    assert first["prompt"] == PROMPT
    assert (
        first["reference"]
        == annotations[[a["image_id"] for a in annotations].index(test_ids[0])]["caption"]
    )
    assert set(first["baselines"]) == {"most_frequent", "nearest_neighbour"}
    metrics = json.loads((job / "metrics.json").read_text())
    assert results == {"openi/test": metrics}
    assert metrics["n"] == len(lines)
    assert set(metrics["baselines"]) == {"most_frequent", "nearest_neighbour"}
    assert metrics["run"]["split"] == "test" and metrics["run"]["reports_per_second"] > 0
    assert metrics["skipped"]["METEOR"].startswith("disabled")
    assert metrics["skipped_images"] == {"count": 0, "image_ids": []}
    assert "positive = 1" in metrics["definition"]
    # the baselines copy training reports, which the labeler reads as the phantom drew them
    assert metrics["baselines"]["most_frequent"]["nlg"]["ROUGE-1"] > 0.2
    out = capsys.readouterr().out
    assert "most_frequent" in out and "reports/s" in out and str(job / "metrics.json") in out


def test_skipped_test_images_are_recorded_in_metrics_and_the_table(
    phantom: Path,
    tmp_path: Path,
    small_model_overrides: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from PIL import Image

    data = Path(shutil.copytree(phantom, tmp_path / "phantom"))
    annotations = json.loads((data / "filter_cap.json").read_text())["annotations"]
    # the train split (read with eval processors here): the test split has only two images
    test_ids = [a["image_id"] for a in annotations if a["split"] == "train"]
    (data / "image" / f"{test_ids[0]}.png").write_bytes(b"not a png")
    Image.new("L", (1, 1)).save(data / "image" / f"{test_ids[1]}.png")  # below min_image_size
    monkeypatch.chdir(REPO_ROOT)
    cfg = eval_config(
        data, tmp_path / "output", small_model_overrides, nn_baseline=False, test_splits=["train"]
    )
    cfg["datasets"]["openi"]["on_bad_image"] = "skip"
    cfg_path = tmp_path / "tiny_eval.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    _test_entry().main(["--cfg-path", str(cfg_path), "--options", "run.max_samples=4"])
    metrics = json.loads((tmp_path / "output" / "tiny_eval" / "metrics.json").read_text())
    assert metrics["n"] == 2  # the two bad images were replaced by the next readable one
    assert metrics["skipped_images"] == {"count": 2, "image_ids": test_ids[:2]}
    out = capsys.readouterr().out
    assert f"images skipped (unreadable or too small): 2: {test_ids[0]}, {test_ids[1]}" in out


def test_skipped_ids_of_folder_and_shard_datasets() -> None:
    items = Items(5)
    got = [{"image_id": "img0"}, {"image_id": "img3"}, {"image_id": "img4"}]
    assert skipped_image_ids(items, got, None) == ["img1", "img2"]
    assert skipped_image_ids(items, got[:2], 4) == ["img1", "img2"]  # img4 is past the cut
    # Shard datasets have no annotation list: their own record counts (once per image).
    assert skipped_image_ids(Stream(3), got, None, ["img7", "img7", "img9"]) == ["img7", "img9"]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(
    phantom: Path, tmp_path: Path, small_model_overrides: dict[str, Any]
) -> None:
    """Sharded over two CPU ranks (gloo), the gathered predictions equal one process's."""
    cfg = eval_config(
        phantom,
        tmp_path / "output",
        small_model_overrides,
        test_splits=["train"],
        max_samples=5,
        nn_baseline=False,
    )
    paths = {}
    for name in ("one", "two"):
        cfg_path = tmp_path / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        nproc = "1" if name == "one" else "2"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", nproc,
            "--master-port", str(29500 + int(nproc) + os.getpid() % 1000), "test.py",
            "--cfg-path", str(cfg_path),
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        paths[name] = tmp_path / "output" / name / "predictions.jsonl"
    one = [json.loads(x) for x in paths["one"].read_text().splitlines()]
    two = [json.loads(x) for x in paths["two"].read_text().splitlines()]
    assert len(one) == 5 and one == two


def test_shipped_tiny_eval_config_runs(
    phantom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval_configs/xraygpt_tiny_eval.yaml as shipped, without its weights, on a few phantoms."""
    test_entry = _test_entry()
    config = REPO_ROOT / "eval_configs" / "xraygpt_tiny_eval.yaml"
    if not config.is_file():
        pytest.skip("the tiny recipe's eval config is not in this tree")
    monkeypatch.chdir(REPO_ROOT)
    options = [
        "model.ckpt=null",
        f"datasets.phantom.build_info.storage={phantom}",
        f"model.tokenizer={phantom / 'tokenizer'}",  # trained by the phantom generator
        f"run.output_dir={tmp_path}",
        "run.max_samples=2",
        "run.max_new_tokens=4",
        "run.device=cpu",
    ]
    results = test_entry.main(["--cfg-path", str(config), "--options", *options])
    metrics = results["phantom/test"]
    assert metrics["n"] == 2 and "most_frequent" in metrics["baselines"]
    assert (tmp_path / "xraygpt_tiny_eval" / "metrics.json").is_file()


def test_test_py_reads_dicom_datasets(
    phantom: Path,
    tmp_path: Path,
    small_model_overrides: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The phantom as DICOMs (``image_ext: dcm``) gives test.py the PNG run's reports."""
    import shutil

    import numpy as np
    from PIL import Image

    from xraygpt.processors.dicom import write_dicom

    dicoms = Path(shutil.copytree(phantom, tmp_path / "phantom_dcm"))
    for png in sorted((dicoms / "image").glob("*.png")):
        stored = np.asarray(Image.open(png).convert("L")).astype(np.uint16) * 16
        # LINEAR_EXACT window 2040/4080 maps 16 p back to p / 255: the PNG's pixels exactly.
        write_dicom(
            png.with_suffix(".dcm"),
            stored,
            bits_stored=12,
            window=(2040, 4080),
            tags={"VOILUTFunction": "LINEAR_EXACT"},
        )
        png.unlink()
    test_entry = _test_entry()
    monkeypatch.chdir(REPO_ROOT)
    outputs = {}
    for name, storage, ext in (("png", phantom, "png"), ("dcm", dicoms, "dcm")):
        cfg = eval_config(storage, tmp_path / name, small_model_overrides)
        cfg["datasets"]["openi"]["image_ext"] = ext
        cfg_path = tmp_path / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        test_entry.main(["--cfg-path", str(cfg_path), "--options", "run.max_samples=3"])
        lines = (tmp_path / name / name / "predictions.jsonl").read_text().splitlines()
        outputs[name] = [json.loads(x) for x in lines]
    annotations = json.loads((phantom / "filter_cap.json").read_text())["annotations"]
    n_test = sum(a["split"] == "test" for a in annotations)
    assert len(outputs["dcm"]) == min(3, n_test) > 0  # no DICOM skipped as unreadable
    assert outputs["dcm"] == outputs["png"]  # reports and both baselines
