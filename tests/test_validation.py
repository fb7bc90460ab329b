"""Every bad input is refused before any work: exit 2, one line on stderr, no traceback, no cell.

Model options go through the models' own validation (the model is built once before any cell),
estimator options through the estimators' (also those a profile's variants override), floats
must be finite, a variant may not name a key twice, toy draws must fit in memory, a Ray
address must answer in time, device-check's arguments are checked with or without CUDA, a
results folder must be writable, and a data file that fails its checksum is named with its
reason on the one line.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradbench.cli import main
from gradbench.commands import common
from gradbench.measure import toy
from gradbench.execution import ray_executor
from gradbench.execution.ray_executor import RayExecutor, RayUnavailable, validate_ray_address

REPO = Path(__file__).resolve().parent.parent
MNIST = Path("/work/shared/data/mnist")
TRAIN = ("train", "--model", "gaussian-vae", "--estimator", "reparam", "--dataset", "digits",
         "--epochs", "1", "--quiet")
TOY = ("toy", "--problem", "gaussian-quadratic", "--estimator", "reparam")
CATEGORICAL_TOY = ("toy", "--problem", "categorical-linear")
ALL = ("all", "--profile", "smoke", "--models", "gaussian-vae", "--experiments", "train",
       "--quiet", "--formats", "md")

BAD_INPUTS = {
    "latent_dim=0": ((*TRAIN, "--model-arg", "latent_dim=0"),
                     "latent_dim must be a positive int, got 0"),
    "latent_dim=-3": ((*TRAIN, "--model-arg", "latent_dim=-3"),
                      "latent_dim must be a positive int, got -3"),
    "hidden_sizes=0": ((*TRAIN, "--model-arg", "hidden_sizes=0"),
                       "hidden_sizes must be one or more positive ints"),
    "variance --bootstrap 0": (("variance", "--model", "gaussian-vae", "--estimators", "reparam",
                                "--dataset", "digits", "--quiet", "--bootstrap", "0"),
                               "--bootstrap needs at least 2 replicates"),
    "toy sigma=nan": ((*TOY, "--param", "sigma=nan"),
                      "bad value 'nan' for sigma: expected a finite number"),
    "toy mu=inf": ((*TOY, "--param", "mu=inf"), "bad value 'inf' for mu: expected a finite number"),
    "temperature=inf": ((*CATEGORICAL_TOY, "--estimator", "gumbel-softmax[temperature=inf]"),
                        "bad value 'inf' for temperature: expected a finite number"),
    "duplicate key": ((*CATEGORICAL_TOY, "--estimator",
                       "gumbel-softmax[temperature=0.5,temperature=0.1]"),
                      "option 'temperature' given twice in estimator variant"),
    "toy samples beyond memory": ((*TOY, "--samples", "100000000000"),
                                  "--samples 100000000000 needs about"),
    "all estimator-arg under variants": ((*ALL, "--estimator-arg",
                                          "gumbel-softmax:temperature=-1"),
                                         "temperature must be positive, got -1.0"),
    "all model-arg": ((*ALL, "--model-arg", "gaussian-vae:latent_dim=0"),
                      "latent_dim must be a positive int, got 0"),
    "device-check --seeds a": (("device-check", "--seeds", "a"),
                               "--seeds must be comma-separated integers, got 'a'"),
    "device-check --models nope": (("device-check", "--models", "nope"), "unknown model 'nope'"),
    "device-check --device nope": (("device-check", "--device", "nope"),
                                   "unknown device 'nope'; valid: cpu, cuda"),
    "device-check --estimators nope": (("device-check", "--estimators", "nope"),
                                       "unknown estimator 'nope'"),
    "device-check --experiments nope": (("device-check", "--experiments", "nope"),
                                        "unknown experiment 'nope'"),
    "ray address garbage": ((*ALL, "--executor", "ray", "--ray-address", "garbage:99999"),
                            "bad --ray-address 'garbage:99999'"),
    "ray address refused": ((*ALL, "--executor", "ray", "--ray-address", "127.0.0.1:1"),
                            "Ray at '127.0.0.1:1' does not answer within 15 s"),
}


def _work_began(*args: object, **kwargs: object) -> None:
    raise AssertionError("work began on a bad input")


@pytest.mark.parametrize(("argv", "message"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_a_bad_input_exits_2_with_one_line_before_any_cell(
    argv: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(toy, "gradient_draws", _work_began)  # a toy input passed: no draws
    command = argv[0]
    folders = {"all": ["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")],
               "device-check": ["--results", str(tmp_path / "results")]}
    extra = folders.get(command, ["--results", str(tmp_path / "results")]
                        if command != "toy" else [])
    assert main([*argv, *extra]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and message in error, error
    assert not list(tmp_path.rglob("*.csv"))


@pytest.mark.parametrize("results", ["/proc/x", "/etc/hostname"])
@pytest.mark.parametrize("command", ["train", "timing", "variance"])
def test_a_results_folder_that_cannot_be_written_exits_2_before_the_data(
    command: str, results: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common, "load_dataset", _work_began)
    flag = "--estimator" if command == "train" else "--estimators"
    argv = [command, "--model", "gaussian-vae", flag, "reparam", "--dataset", "digits",
            "--quiet", "--results", results]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"gradbench {command}: error: cannot write results to '{results}'")
    assert len(error.strip().splitlines()) == 1


def test_a_ray_address_that_does_not_answer_is_refused_within_its_time(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = pytest.importorskip("ray")

    def hangs(**options: object) -> None:  # a cluster behind a proxy: accepted, never answers
        time.sleep(30)

    monkeypatch.setattr(ray, "init", hangs)
    monkeypatch.setattr(ray_executor, "RAY_ANSWER_SECONDS", 0.5)
    start = time.perf_counter()
    with pytest.raises(RayUnavailable, match="does not answer within 0.5 s"):
        RayExecutor("127.0.0.1:6379").start()
    assert time.perf_counter() - start < 5
    assert validate_ray_address("local") == "local" and validate_ray_address("auto") == "auto"


def test_list_into_a_pipe_closed_early_ends_quietly() -> None:
    process = subprocess.Popen([sys.executable, "-m", "gradbench", "list"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()  # `list | head -1`
    error = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0 and error == "", error


@pytest.mark.skipif(not MNIST.is_dir(), reason="needs the MNIST files")
def test_a_truncated_data_file_is_named_with_its_reason_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached copy to fall back on
    data = tmp_path / "mnist"
    shutil.copytree(MNIST, data)
    images = data / "t10k-images-idx3-ubyte.gz"
    images.chmod(0o644)
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    with pytest.raises(EOFError):
        gzip.decompress(images.read_bytes())
    argv = ["train", "--model", "gaussian-vae", "--estimator", "reparam", "--dataset", "mnist",
            "--data-dir", str(data), "--epochs", "1", "--results", str(tmp_path / "r")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    assert str(images) in error and "does not decompress" in error
