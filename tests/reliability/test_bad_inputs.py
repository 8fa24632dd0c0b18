"""Bad inputs the other test files do not cover (docs/bad_inputs.md lists them all): damaged
checkpoints, unreadable dataset directories and out-of-range compression levels on the command line.
Every one gives a clear error naming the file or argument, exit status 2 in the CLI, and writes nothing.
"""
import copy
import gzip
import io
import os
import pathlib
import re

import numpy as np
import pytest
import torch
import yaml

import sparsefw
from sparsefw import compress
from reliability_helpers import TINY_RUN
from sparsefw.cli import main
from sparsefw.experiments.checkpoint import CheckpointError, content_digest, load_checkpoint
from sparsefw.experiments.compression import compress_and_save, load_compressed


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A real one-epoch run directory; tests copy its checkpoint, never write into it."""
    out = tmp_path_factory.mktemp("good") / "run"
    config = out.parent / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_RUN, "training": {**TINY_RUN["training"], "epochs": 1}}))
    torch.set_num_threads(1)
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    return out


def _damaged_copy(good_run, tmp_path, damage):
    run = tmp_path / "run"
    run.mkdir()
    for f in good_run.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    path = run / "checkpoint.pt"
    path.write_bytes(damage(path.read_bytes()))
    return run


def _flip(data: bytes, position: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 0x55
    return bytes(out)


def _flip_inside_a_weight(data: bytes) -> bytes:
    """One byte flipped in the middle of the largest weight's stored bytes (torch stores them uncompressed)."""
    weights = torch.load(io.BytesIO(data), weights_only=True)["model"].values()
    raw = max(weights, key=torch.Tensor.numel).numpy().tobytes()
    start = data.find(raw)
    assert start > 0
    return _flip(data, start + len(raw) // 2)


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


DAMAGE = {
    "empty": (lambda b: b"", "truncated or corrupt"),
    "truncated_to_half": (lambda b: b[: len(b) // 2], "truncated or corrupt"),
    "last_bytes_cut": (lambda b: b[:-10], "truncated or corrupt"),
    "text_file": (lambda b: b"model: resnet\n" * 20, "truncated or corrupt"),
    "byte_flipped_in_a_weight": (_flip_inside_a_weight, "do not match their SHA-256 digest"),
    "not_a_dict": (lambda b: _torch_bytes([torch.zeros(3)]), "not a sparsefw training checkpoint"),
    "state_dict_only": (lambda b: _torch_bytes({"weight": torch.zeros(3)}), "missing ['model'"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_checkpoint_raises_naming_the_file(good_run, tmp_path, kind):
    damage, words = DAMAGE[kind]
    run = _damaged_copy(good_run, tmp_path, damage)
    with pytest.raises(CheckpointError, match=re.escape(words)) as error:
        load_checkpoint(run)
    assert str(run / "checkpoint.pt") in str(error.value)


def test_every_byte_flip_is_detected_or_harmless(good_run):
    """torch's zip reader checks no CRC; the digest makes every corruption loud: a flipped byte either
    raises CheckpointError or (zip padding and metadata) loads the very same contents."""
    data = (good_run / "checkpoint.pt").read_bytes()
    reference = content_digest(load_checkpoint(good_run))
    path = good_run.parent / "flipped.pt"
    outcomes = set()
    for position in range(0, len(data), max(1, len(data) // 60)):
        path.write_bytes(_flip(data, position))
        try:
            outcomes.add("same" if content_digest(load_checkpoint(path)) == reference else "DIFFERENT")
        except CheckpointError:
            outcomes.add("error")
    assert "DIFFERENT" not in outcomes and "error" in outcomes


@pytest.mark.parametrize("command", [
    ["train", "--resume", "--out", "{run}"],
    ["sweep", "--run", "{run}"],
    ["compress", "--run", "{run}", "--kind", "filters", "--level", "0.5"],
])
def test_cli_exits_2_on_a_truncated_checkpoint_and_writes_nothing(good_run, tmp_path, capsys, command):
    run = _damaged_copy(good_run, tmp_path, lambda b: b[: len(b) // 3])
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    assert main([arg.format(run=run) for arg in command]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint '{run / 'checkpoint.pt'}'" in err and "truncated or corrupt" in err
    assert "Traceback" not in err
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before


def _write_idx_gz(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


def _dataset_dir(tmp_path, case, monkeypatch):
    """A data_dir for Fashion-MNIST that fails in the way `case` names."""
    data_dir = tmp_path / "fashion"
    if case == "missing":
        return data_dir
    if case == "a_file":
        data_dir.write_text("not a directory")
        return data_dir
    data_dir.mkdir()
    if case == "empty":
        return data_dir
    images = data_dir / "train-images-idx3-ubyte.gz"
    _write_idx_gz(images, np.zeros((10, 28, 28), dtype=np.uint8))
    if case == "truncated_file":
        images.write_bytes(images.read_bytes()[:-20])
    elif case == "permission_denied":
        images.chmod(0)
        if os.geteuid() == 0:           # root reads anyway: make reading fail as it does for everyone else
            real = pathlib.Path.read_bytes

            def read_bytes(self):
                if self == images:
                    raise PermissionError(13, "Permission denied", str(self))
                return real(self)

            monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    return data_dir


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("a_file", "does not exist"),
    ("empty", "train-images-idx3-ubyte[.gz] not found"),
    ("truncated_file", "corrupt or truncated gzip"),
    ("permission_denied", "Permission denied"),
])
def test_unreadable_dataset_directory_exits_2(tmp_path, capsys, monkeypatch, case, words):
    data_dir = _dataset_dir(tmp_path, case, monkeypatch)
    config = copy.deepcopy(TINY_RUN)
    config["data"].update(name="fashion_mnist", data_dir=str(data_dir))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "config key 'data'" in err and words in err and str(data_dir) in err
    assert not out.exists()


@pytest.mark.parametrize("level", ["1.5", "0", "1", "nan", "half"])
def test_compress_level_outside_0_1_is_an_argument_error(tmp_path, capsys, level):
    with pytest.raises(SystemExit) as exit_:
        main(["compress", "--run", str(tmp_path), "--kind", "lowrank", "--level", level])
    assert exit_.value.code == 2
    assert "argument --level" in capsys.readouterr().err


@pytest.mark.parametrize("batches", ["-1", "2.5", "many"])
def test_compress_bn_recalibration_not_a_count_is_an_argument_error(tmp_path, capsys, batches):
    with pytest.raises(SystemExit) as exit_:
        main(["compress", "--run", str(tmp_path), "--kind", "lowrank", "--level", "0.5", "--bn-recalibration", batches])
    assert exit_.value.code == 2
    assert "argument --bn-recalibration" in capsys.readouterr().err


def test_sparse_gradients_are_refused_before_anything_moves():
    embedding = torch.nn.Embedding(5, 3, sparse=True)
    opt = sparsefw.SFW(embedding.parameters())
    before = embedding.weight.detach().clone()
    embedding(torch.tensor([1, 3])).sum().backward()
    with pytest.raises(RuntimeError, match="SFW does not support sparse gradients"):
        opt.step()
    assert torch.equal(embedding.weight, before)


@pytest.mark.parametrize("args, words", [
    (["train", "--out", "{tmp}/out"], "--config is required"),
    (["train", "--resume", "--out", "{tmp}/out"], "--resume: no checkpoint.pt in"),
    (["train", "--config", "{cfg}", "--method", "sgd", "--out", "{tmp}/out"], "the config lists no methods"),
    (["train", "--config", "{cfg}", "--set", "training.device=tpu0", "--out", "{tmp}/out"],
     "config key 'training.device': not a device name"),
    (["sweep", "--run", "{tmp}/out", "--set", "optimizer.lr=0.1"], "sweep takes only sweep.KEY=VALUE overrides"),
    (["report", "{tmp}/out", "--out", "{tmp}/report"], "no sweep.json in"),
    (["compress", "--run", "{tmp}/out", "--kind", "blocks", "--level", "0.5"], "argument --kind: invalid choice"),
])
def test_other_cli_mistakes_exit_2_and_write_nothing(tmp_path, capsys, args, words):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY_RUN))
    try:
        code = main([a.format(tmp=tmp_path, cfg=cfg) for a in args])
    except SystemExit as exit_:                      # argparse's own errors
        code = exit_.code
    assert code == 2
    assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_rebuild_and_flops_budget_mistakes_name_the_argument():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 36, 4))
    for recipe, shown in [(None, "None"), ("prune", "'prune'"), ({"kind": "zip"}, "'zip'"), ({}, "None")]:
        with pytest.raises(ValueError, match=re.escape(f"recipe must be a dict with kind in ['factorize', 'prune', "
                                                       f"'remove_filters'], got {shown}")):
            compress.rebuild(model, recipe)
    with pytest.raises(ValueError, match="example_inputs is required for budget_kind='flops'"):
        compress.factorize(model, budget=0.5, budget_kind="flops")


@pytest.mark.parametrize("compress", [
    lambda m: sparsefw.compress.prune(m, sparsity=0.5),
    lambda m: sparsefw.compress.factorize(m, rank=0.5),
    lambda m: sparsefw.compress.remove_filters(m, amount=0.5, example_inputs=torch.zeros(1, 1, 8, 8)),
])
def test_compressing_something_that_is_not_a_module_names_the_model(compress):
    with pytest.raises(ValueError, match="model must be an nn.Module, got str"):
        compress("model")


def test_rebuild_with_a_recipe_missing_fields_names_them():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    _, recipe = sparsefw.compress.remove_filters(model, amount=0.5, example_inputs=torch.randn(1, 1, 8, 8),
                                                 return_recipe=True)
    del recipe["input_shapes"]
    with pytest.raises(ValueError, match=r"'remove_filters' recipe lacks the field\(s\) \['input_shapes'\]"):
        sparsefw.compress.rebuild(model, recipe)
    with pytest.raises(ValueError, match=r"'factorize' recipe lacks the field\(s\) \['ranks'\]"):
        sparsefw.compress.rebuild(model, {"kind": "factorize"})


@pytest.mark.parametrize("damage, words", [
    (lambda data: data[: len(data) // 2], "cannot be loaded"),                       # truncated file
    (lambda data: _torch_bytes({"features.0.weight": torch.zeros(1)}), "does not fit its recipe"),
    (lambda data: _torch_bytes([1, 2, 3]), "does not fit its recipe"),             # not a state_dict
])
def test_damaged_compressed_model_raises_naming_the_file(good_run, tmp_path, damage, words):
    run = _damaged_copy(good_run, tmp_path, lambda data: data)      # an undamaged copy to compress
    _, saved = compress_and_save(run, "filters", 0.5)
    load_compressed(saved)                                           # loads before the damage
    model_pt = saved / "model.pt"
    model_pt.write_bytes(damage(model_pt.read_bytes()))
    with pytest.raises(CheckpointError, match=words) as info:
        load_compressed(saved)
    assert str(model_pt) in str(info.value)
