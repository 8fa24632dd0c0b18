"""SFW inside other machinery: a PyTorch Lightning LightningModule (the closure path) and torch.compile'd
models. GradScaler and torch.optim.lr_scheduler are tested in tests/optim/test_sfw_integration.py, ONNX
export of compressed models in tests/compress/test_metrics_export.py.
"""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sparsefw
from sparsefw.data import get_datasets


def _digits():
    """sklearn's 1797 real 8×8 digits (training split) as tensors."""
    train, _, _ = get_datasets("digits")
    return train.images, train.targets


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _assert_feasible(opt):
    for group in opt.param_groups:
        c = group["constraint"]
        assert float(c.norm(group["params"][0].detach())) <= c.radius * (1 + 1e-5), group["name"]


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
def test_lightning_trains_with_sfw_through_the_closure():
    L = pytest.importorskip("lightning")
    x, y = _digits()

    class DigitsModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()
            self.training_steps = 0

        def training_step(self, batch, batch_idx):
            self.training_steps += 1
            inputs, targets = batch
            return F.cross_entropy(self.net(inputs), targets)

        def configure_optimizers(self):
            opt = sparsefw.SFW(sparsefw.constrain(self.net, "k_support", k=0.3, width=5.0), lr=0.2)
            schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    module = DigitsModule()
    with torch.no_grad():
        before = F.cross_entropy(module.net(x), y).item()
    closures = []

    def record(optimizer, args, kwargs):
        closures.append(callable(kwargs.get("closure", args[0] if args else None)))

    trainer = L.Trainer(max_steps=60, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    opt = None
    with pytest.MonkeyPatch.context() as mp:          # record how Lightning calls SFW.step
        original = sparsefw.SFW.__init__

        def init(self, *args, **kwargs):
            nonlocal opt
            original(self, *args, **kwargs)
            self.register_step_pre_hook(record)
            opt = self

        mp.setattr(sparsefw.SFW, "__init__", init)
        trainer.fit(module, loader)
    assert trainer.global_step == module.training_steps == len(closures) == 60
    assert all(closures)                               # every step was step(closure), training_step inside it
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5 ** 3)   # the scheduler stepped per iteration
    with torch.no_grad():
        after = F.cross_entropy(module.net(x), y).item()
    assert after < 0.5 * before
    _assert_feasible(opt)
    assert opt.nonfinite_steps == 0


BACKENDS = ["aot_eager", pytest.param("inductor", marks=pytest.mark.skipif(
    os.environ.get("SPARSEFW_TEST_INDUCTOR") != "1",
    reason="inductor compiles C++ for 30-60 s on a 2-core CPU; set SPARSEFW_TEST_INDUCTOR=1 to run"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sfw_steps_a_compiled_model_like_the_eager_one(backend):
    """The compiled model sees every in-place SFW update (parameters are graph inputs, not constants),
    trains like its eager twin and compiles once, not once per step."""
    torch._dynamo.reset()
    x, y = _digits()
    eager = _mlp()
    model = copy.deepcopy(eager)
    compiled = torch.compile(model, backend=backend)
    opts = [sparsefw.SFW(sparsefw.constrain(m, "spectral_k_support", k=0.5, width=5.0), lr=0.1)
            for m in (model, eager)]
    gen = torch.Generator().manual_seed(0)
    for step in range(8):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        for net, opt in zip((compiled, eager), opts):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        if step == 1:
            graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs >= 1    # no recompiles
    for a, b in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(model[1].weight, _mlp()[1].weight)                        # it did train
    with torch.no_grad():
        torch.testing.assert_close(compiled(x[:32]), eager(x[:32]), rtol=1e-4, atol=1e-5)
    _assert_feasible(opts[0])
