"""Nothing user-supplied is evaluated or unpickled.

A static scan of every module in src/sparsefw (its syntax tree, so `model.eval()` is no false alarm),
checked first against code that commits each offence; then the loaders meet a checkpoint and a config
that carry code, and neither runs it. Files that must load with weights_only=True are tested where
they are made: training checkpoints (tests/experiments/test_train.py), optimizer states
(tests/optim/test_sfw_integration.py::test_resume_from_weights_only_checkpoint_is_bit_identical),
scheduler states (tests/experiments/test_schedules.py), compressed models and their JSON recipes
(tests/compress/test_remove_filters.py, test_factorize.py: recipe_rebuild ... weights_only).
"""
import ast
import io
from pathlib import Path

import pytest
import torch
import yaml

import sparsefw
from sparsefw.cli import main
from sparsefw.experiments.checkpoint import CheckpointError, load_checkpoint

SRC = Path(sparsefw.__file__).parent
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "load"),
                ("marshal", "loads"), ("shelve", "open"), ("dill", "load"), ("dill", "loads"),
                ("joblib", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("os", "system"),
                ("os", "popen")}


def _dotted(node) -> tuple[str, ...]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "<expression>")    # f(x).eval() is no builtin
    return tuple(reversed(parts))


def _keyword_is(call: ast.Call, name: str, accept) -> bool:
    return any(k.arg == name and accept(k.value) for k in call.keywords)


def _true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _safe_loader(node) -> bool:
    return _dotted(node)[-1:] in {("SafeLoader",), ("CSafeLoader",)}


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every call in `source` that could execute code from data: eval/exec/compile/__import__,
    pickle-family loads, torch.load without weights_only=True, yaml.load without a SafeLoader,
    numpy.load with allow_pickle=True, subprocess with shell=True, os.system/popen."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}: {'.'.join(name) or ast.unparse(node.func)}"
        if len(name) == 1 and name[0] in UNSAFE_BUILTINS:
            found.append(where)
        elif name[-2:] in UNSAFE_CALLS:
            found.append(where)
        elif name[-2:] == ("torch", "load") and not _keyword_is(node, "weights_only", _true):
            found.append(where + " without weights_only=True")
        elif name[-2:] == ("yaml", "load") and not _keyword_is(node, "Loader", _safe_loader):
            found.append(where + " without SafeLoader")
        elif name[-1:] == ("load",) and name[:-1] in {("np",), ("numpy",)} and _keyword_is(node, "allow_pickle", _true):
            found.append(where + " with allow_pickle=True")
        elif name[:1] == ("subprocess",) and _keyword_is(node, "shell", _true):
            found.append(where + " with shell=True")
    return found


def test_the_scanner_finds_each_offence():
    offences = """
eval(text); exec(text); compile(text, "f", "exec"); __import__(name)
pickle.load(f); pickle.loads(b); marshal.loads(b); shelve.open(p); os.system(cmd)
torch.load(p); torch.load(p, weights_only=False); torch.load(p, map_location="cpu")
yaml.load(text); yaml.load(text, Loader=yaml.Loader); yaml.unsafe_load(text); yaml.full_load(text)
np.load(p, allow_pickle=True); subprocess.run(cmd, shell=True)
"""
    harmless = """
model.eval(); net.to(d).eval(); torch.load(p, weights_only=True); yaml.load(t, Loader=yaml.SafeLoader); yaml.safe_load(t)
np.load(p); json.loads(t); subprocess.run(["ls"]); re.compile("x"); torch.compile(model)
"""
    assert len(unsafe_calls(offences)) == 18
    assert unsafe_calls(harmless) == []


def test_no_module_of_the_package_evaluates_or_unpickles():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    found = [hit for f in files for hit in unsafe_calls(f.read_text(), str(f.relative_to(SRC)))]
    assert found == []


class _Payload:
    """Unpickling this would create the file `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_carrying_code_is_refused_not_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"model": {}, "config": {}, "payload": _Payload(marker)}, buffer)
    (run / "checkpoint.pt").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="(?i)unsupported global"):
        load_checkpoint(run)
    assert main(["sweep", "--run", str(run)]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_a_config_carrying_code_is_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"name: evil\ntraining: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:"
                      f"pathlib.Path [{str(marker)!r}]]\n")
    with pytest.raises(yaml.constructor.ConstructorError):           # what an unsafe loader would run
        yaml.safe_load(config.read_text())
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "invalid YAML" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()
