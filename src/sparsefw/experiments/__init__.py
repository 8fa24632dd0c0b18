"""Experiments: config → training (checkpoints, resume, DDP) → compression sweeps → reports.

    from sparsefw.experiments import resolve, read_config_file, train, sweep_run, write_report
    cfg = resolve(read_config_file("demo"), ["training.epochs=2"], methods=["sgd"])["sgd"]
    train(cfg, "runs/sgd"); sweep_run("runs/sgd"); write_report(["runs/sgd"], "runs/report")
    summary, folder = compress_and_save("runs/sgd", "filters", 0.5)   # `sparsefw compress`
    model = load_compressed(folder)        # from that folder alone (also sparsefw.load_compressed)
"""
from .compression import compress_and_save, load_compressed
from .config import ConfigError, ExperimentConfig, read_config_file, resolve, validate
from .evaluation import evaluate
from .report import markdown_table, write_report
from .runs import plan_runs
from .schedules import LRFactor
from .sweep import load_trained, run_sweep, sweep_run
from .train import train

__all__ = ["ConfigError", "ExperimentConfig", "LRFactor", "compress_and_save", "evaluate", "load_compressed",
           "load_trained", "markdown_table", "plan_runs", "read_config_file", "resolve", "run_sweep", "sweep_run",
           "train", "validate", "write_report"]
