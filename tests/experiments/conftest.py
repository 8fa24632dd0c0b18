"""Fixtures of the experiment tests: one tiny trained run shared by the tests that only read it."""
import pytest

from sparsefw.experiments.config import validate
from sparsefw.experiments.train import train
from tiny_setup import tiny


@pytest.fixture
def tiny_config():
    return validate(tiny())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(run directory, per-epoch metrics) of the tiny SFW k-support CNN; read it, don't write into it."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    return out, train(validate(tiny()), out)
