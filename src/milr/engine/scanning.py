"""`scan`: one configuration trained at every rate of a log grid for the whole budget, all seeds
as one batched ensemble, and the three rates read off it (`engine.scan`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..base.config import EstimateConfig, ScanConfig, check_scan
from ..base.device import device_name, num_threads, resolve_device, synchronize, versions
from ..data.formats import Dataset
from ..data.lookup import identities, load
from .estimation import default_trainer, on_device, training_threads
from .scan import ScanResult, analyse, scan_grid


def scan(cfg: EstimateConfig, scfg: ScanConfig | None = None, data: Dataset | None = None,
         on_progress: Callable[[int, int], None] | None = None) -> ScanResult:
    """Every (rate, seed) of cfg's scan grid trained for the whole budget (a diverged run stops
    there), and its analysis: the library entry point of `milr scan`. `on_progress(done,
    members)` is told how many runs have finished (0: the training starts). Refuses the
    search-only options (`check_scan`) and a grid of fewer than 3 rates."""
    scfg = scfg or ScanConfig()
    check_scan(cfg)
    lrs = scan_grid(cfg.lr_min, cfg.lr_max, scfg.points_per_octave)
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    device = resolve_device(cfg.device)
    data = data or load(cfg.dataset, cfg.data_dir)
    code = identities(cfg, data)  # the user code and data behind it, before the code runs
    data = on_device(cfg, data, device, len(lrs) * len(seeds))
    start = time.perf_counter()
    trainer = default_trainer(cfg, data, device, full_eval=True, full_budget=True)
    with num_threads(training_threads(cfg, device, data, len(lrs) * len(seeds), trainer)):
        trainer.admit([lr for lr in lrs for _ in seeds], seeds * len(lrs))
        runs = []
        if on_progress is not None:  # everything is checked: the training starts
            on_progress(0, len(lrs) * len(seeds))
        while trainer.pending:
            runs += [o for _, o in trainer.advance()]
            if on_progress is not None:
                on_progress(len(runs), len(lrs) * len(seeds))
        synchronize(device)
        name = device_name(device)
    runs.sort(key=lambda r: (r.lr, r.seed))  # in grid order, whatever order they ended in
    return analyse(cfg, scfg, runs, lrs, seeds, wall_time=time.perf_counter() - start,
                   member_steps=sum(r.steps for r in runs), device=name, versions=versions(),
                   code=code)
