"""Atomic writes: whole files or none, with the mode an ordinary open() would give them."""
import os
import stat

import pytest
import torch

from sparsefw.experiments.io import save_torch, write_csv, write_json, write_text


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:       # the independent truth: what open() gives
            f.write("x")
        files = [write_text(tmp_path / "a.txt", "x"), write_json(tmp_path / "b.json", {"a": 1}),
                 write_csv(tmp_path / "c.csv", [{"a": 1}]), save_torch(tmp_path / "d.pt", torch.zeros(2))]
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [expected] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.csv", "d.pt", "plain.txt"]
