"""A compressed model loads from its folder alone, through one public call."""
import shutil

import pytest
import torch

import sparsefw
import sparsefw.data
from sparsefw.experiments import compress_and_save, load_compressed
from sparsefw.experiments.sweep import compress_model, load_trained


@pytest.mark.parametrize("kind", ["filters", "channels"])
def test_compressed_folder_loads_alone_with_weights_only(tiny_run, tmp_path, monkeypatch, kind):
    run, _ = tiny_run
    summary, folder = compress_and_save(run, kind, 0.5, out=tmp_path / "made")
    model, _, loader, _ = load_trained(run)
    x = next(iter(loader))[0]
    fresh = compress_model(model, kind, 0.5, x[:1]).eval()               # the same compression, made anew
    moved = shutil.move(str(folder), str(tmp_path / "elsewhere"))         # away from the run it came from
    assert summary["dataset"]["num_classes"] == 10 and summary["dataset"]["in_channels"] == 1

    def no_data(*args, **kwargs):
        raise AssertionError("load_compressed must not load the data")

    loads = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(sparsefw.data, "get_datasets", no_data)
    monkeypatch.setattr("sparsefw.experiments.sweep.get_datasets", no_data)
    monkeypatch.setattr(torch, "load", recording_load)
    loaded = sparsefw.load_compressed(moved)
    assert loads == [True]
    assert sparsefw.load_compressed is load_compressed and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), fresh(x), rtol=0, atol=0)
    assert sum(p.numel() for p in loaded.parameters()) == summary["params_compressed"]


def test_an_unknown_kind_is_refused_before_the_run_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"kind must be one of 'unstructured', 'filters', 'channels', 'lowrank', "
                                         r"got kind='blocks'"):
        compress_and_save(tmp_path / "no_run_here", "blocks", 0.5)
