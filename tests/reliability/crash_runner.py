"""Run the `sparsefw` CLI and SIGKILL this process at a chosen point, deterministically (test helper).

    python crash_runner.py after-steps N  -- train --config C --out D   # killed right after optimizer step N
    python crash_runner.py in-save N      -- train --config C --out D   # killed halfway through writing the
                                                                         # N-th torch.save file (bytes on disk)

Nothing in sparsefw is patched: `after-steps` uses torch's global optimizer step hook; `in-save` wraps
torch.save so that its N-th call writes half of the serialised bytes, fsyncs them and dies — the state
a power cut or an OOM kill leaves behind.
"""
import io
import os
import signal
import sys

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_steps(n: int) -> None:
    steps = 0

    def hook(optimizer, args, kwargs):
        nonlocal steps
        steps += 1
        if steps == n:
            _die()

    register_optimizer_step_post_hook(hook)


def kill_in_save(n: int) -> None:
    real_save, calls = torch.save, 0

    def save(obj, f, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls < n:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        _die()

    torch.save = save


if __name__ == "__main__":
    mode, n, separator, *cli_args = sys.argv[1:]
    assert separator == "--", "usage: crash_runner.py (after-steps|in-save) N -- CLI ARGS"
    {"after-steps": kill_after_steps, "in-save": kill_in_save}[mode](int(n))
    from sparsefw.cli import main
    sys.exit(main(cli_args))
