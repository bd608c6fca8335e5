"""The stronger peer: many small MLPs trained at once the way an expert writes it with torch.func.

Each member is an ordinary nn.Sequential at milr's initial weights; `stack_module_state` stacks
them, and one step is `vmap(grad_and_value(loss))` over `functional_call` followed by the
optimizer's update (SGD, momentum, Nesterov, Adam or AdamW with weight decay, torch.optim's
rules written out functionally, their state stacked per member) with each member's (per-layer,
warmed-up) learning rate, optionally under `torch.compile`. Standard parametrisation only. It
implements the protocol of reference.run_one (same data order, evaluation interval, threshold
and divergence rule) for a batch of members that join between chunks and leave as they finish,
and the `admit / advance / pending` interface of milr's search, so `milr.estimate(cfg, data,
trainer=FuncTrainer(...))` runs milr's own search (same probes, same split) on it: the timing
difference is the engine alone.

Written without milr's Ensemble or trainer: only the initial weights and data order come from
milr, through reference.py. It stays a peer on purpose: milr's own torch.func engine for any
model (`--model`, milr.engine.func) shares milr's trainer and update rules, so it cannot check
them; this file can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from reference import (
    Run,
    batch_schedule,
    batch_size,
    check_supported,
    loss_floor,
    make_net,
    meets,
)
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from milr.base.config import EstimateConfig
from milr.data.formats import Dataset

COMPILE_MODES = ("off", "default", "max-autotune-no-cudagraphs", "reduce-overhead")


@dataclass
class _Row:
    """Book-keeping of one member on the host."""

    key: int
    lr: float
    seed: int
    steps_run: int = 0
    peak: float = 0.0
    acc: float | None = None
    run: Run | None = None


def template(cfg: EstimateConfig, data: Dataset) -> nn.Sequential:
    """The architecture without storage: functional_call supplies every member's tensors."""
    dims = [data.n_inputs] + [cfg.width] * cfg.depth + [data.classes]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers += [nn.Linear(a, b, device="meta")] + ([nn.ReLU()] if i < cfg.depth else [])
    return nn.Sequential(*layers)


def slot_names(cfg: EstimateConfig) -> tuple[str, ...]:
    """The per-parameter state the optimizer keeps (torch.optim's names)."""
    name = getattr(cfg, "optimizer", "sgd")
    return {"momentum": ("momentum_buffer",), "nesterov": ("momentum_buffer",),
            "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq")}.get(name, ())


def make_step(base: nn.Sequential, cfg: EstimateConfig):
    """One optimizer step of every member: vmap of grad over the functional model, then
    torch.optim's update of cfg's optimizer, out of place: (params, loss, slots)."""
    def member_loss(params, x, y):
        return F.cross_entropy(functional_call(base, params, (x,)), y)

    grads_and_losses = vmap(grad_and_value(member_loss))
    name, wd = getattr(cfg, "optimizer", "sgd"), getattr(cfg, "weight_decay", 0.0)

    def sgd(p, g, lr, slots):
        g = g + wd * p if wd else g
        if name == "sgd":
            return p - lr * g, {}
        buf = cfg.momentum * slots["momentum_buffer"] + g  # a zero buffer: the first gradient
        return p - lr * (g + cfg.momentum * buf if name == "nesterov" else buf), \
            {"momentum_buffer": buf}

    def adam(p, g, lr, slots, bias1, bias2_sqrt):
        if wd and name == "adamw":
            p = p * (1 - lr * wd)
        elif wd:
            g = g + wd * p
        m = slots["exp_avg"] + (1 - cfg.beta1) * (g - slots["exp_avg"])
        v = cfg.beta2 * slots["exp_avg_sq"] + (1 - cfg.beta2) * g * g
        return p - (lr / bias1) * m / (v.sqrt() / bias2_sqrt + cfg.eps), \
            {"exp_avg": m, "exp_avg_sq": v}

    def step(params: dict, x: torch.Tensor, y: torch.Tensor, lrs: dict, slots: dict,
             t: torch.Tensor):
        grads, loss = grads_and_losses(params, x, y)
        new_params, new_slots = {}, {}
        if name in ("adam", "adamw"):  # in float64 as torch.optim's Python floats, then rounded
            n = (t + 1).to(torch.float64)
            corr = [c.to(loss.dtype) for c in (1 - cfg.beta1 ** n, (1 - cfg.beta2 ** n).sqrt())]
        for k, p in params.items():
            mine = {s: slots[f"{s}/{k}"] for s in slot_names(cfg)}
            if name in ("adam", "adamw"):
                shape = (-1, *[1] * (p.dim() - 1))
                out, st = adam(p, grads[k], lrs[k], mine, *(c.view(shape) for c in corr))
            else:
                out, st = sgd(p, grads[k], lrs[k], mine)
            new_params[k] = out
            new_slots.update({f"{s}/{k}": v for s, v in st.items()})
        return new_params, loss, new_slots

    return step


def make_logits(base: nn.Sequential):
    """Every member's logits on one shared batch."""
    return vmap(lambda params, x: functional_call(base, params, (x,)), in_dims=(0, None))


class FuncTrainer:
    """Members of one (depth, width) as torch.func-stacked parameters; milr's Trainer protocol.

    Each member runs on its own step count and data order; all train in chunks of at most
    `nonfinite_every` steps that end at every member's evaluations, and finished members are
    dropped from the stack. `cancel_dominated` stops a seed's unfinished members below a rate
    that has succeeded, as milr's estimate does. `compile`: a torch.compile mode or "off".
    """

    def __init__(self, cfg: EstimateConfig, data: Dataset, device: torch.device | None = None,
                 cancel_dominated: bool = False, compile: str = "off"):
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
        check_supported(cfg)
        if getattr(cfg, "parametrization", "sp") != "sp":
            raise ValueError("the torch.func peer implements parametrization sp only")
        self.cfg, self.data, self.cancel = cfg, data, cancel_dominated
        self.device = device or data.x_train.device
        self.batch = batch_size(cfg, data)
        base = template(cfg, data)
        step, self.logits = make_step(base, cfg), make_logits(base)
        self.step = step if compile == "off" else torch.compile(step, mode=compile, dynamic=True)
        self.initial: dict[int, dict[str, torch.Tensor]] = {}  # seed -> its weights, on device
        self.schedules: dict[int, torch.Tensor] = {}  # seed -> (steps, batch) indices on device
        self.rows: list[_Row] = []
        self.state: dict[str, torch.Tensor] = {}  # per row: parameters, lr, t, limit, bad, sched
        self.best: dict[int, float] = {}  # seed -> largest rate that succeeded
        self.next_key = 0

    @property
    def pending(self) -> int:
        return len(self.rows)

    def _member(self, seed: int) -> nn.Sequential:
        """A member's network at its initial weights (drawn once per seed, kept on the device)."""
        if seed not in self.initial:
            self.initial[seed] = {k: v.detach() for k, v in
                                  make_net(self.cfg, self.data, seed).to(self.device)
                                  .named_parameters()}
            n = len(self.data.x_train)
            self.schedules[seed] = batch_schedule(seed, n, self.cfg.steps,
                                                  self.batch).to(self.device)
        return self.initial[seed]

    def admit(self, lrs: list[float], seeds: list[int]) -> list[int]:
        """Stack new members (stack_module_state over their modules) under the running ones."""
        nets = []
        for s in seeds:
            net = template(self.cfg, self.data).to_empty(device=self.device)
            net.load_state_dict(self._member(s))
            nets.append(net)
        params, _ = stack_module_state(nets)
        dev, k = self.device, len(seeds)
        slots = {f"{s}/{name}": torch.zeros_like(p) for s in slot_names(self.cfg)
                 for name, p in params.items()}
        new = {**{name: p.detach() for name, p in params.items()}, **slots,
               "lr": torch.tensor(lrs, dtype=torch.float32, device=dev),
               "t": torch.zeros(k, dtype=torch.long, device=dev),
               "limit": torch.full((k,), math.inf, device=dev),
               "bad": torch.zeros(k, dtype=torch.bool, device=dev),
               "sched": torch.stack([self.schedules[s] for s in seeds])}
        self.state = new if not self.rows else {n: torch.cat([self.state[n], new[n]])
                                                for n in new}
        rows = [_Row(self.next_key + j, float(lr), s)
                for j, (lr, s) in enumerate(zip(lrs, seeds, strict=True))]
        self.next_key += k
        self.rows += rows
        self._unpack()
        return [r.key for r in rows]

    def _unpack(self) -> None:
        """Parameters, optimizer state and per-layer learning rates (input and output layer
        scaled) from the row state."""
        # "0.weight", "0.bias", "2.weight", ...; the state is "exp_avg/0.weight", ...
        names = [n for n in self.state if "." in n and "/" not in n]
        self.params = {n: self.state[n] for n in names}
        self.slots = {n: self.state[n] for n in self.state if "/" in n}
        lr, first, last = self.state["lr"], names[0].split(".")[0], names[-1].split(".")[0]
        scale = {first: self.cfg.input_lr_scale, last: getattr(self.cfg, "output_lr_scale", 1.0)}
        self.lrs = {n: (lr * scale.get(n.split(".")[0], 1.0))
                    .view(-1, *[1] * (self.params[n].dim() - 1)) for n in names}

    def _run(self, n: int) -> torch.Tensor:
        """n SGD steps of every row; the loss (K,) of the last, before its update."""
        cfg, x, y, st = self.cfg, self.data.x_train, self.data.y_train, self.state
        rows = torch.arange(len(self.rows), device=self.device)
        floor = loss_floor(cfg, self.data.classes)
        warmup = getattr(cfg, "warmup_steps", 0)
        for _ in range(n):
            idx = st["sched"][rows, st["t"].clamp(max=cfg.steps - 1)]  # (K, batch)
            lrs = self.lrs
            if warmup:  # step t = 1, 2, ... at lr · min(1, t / warmup)
                warm = ((st["t"] + 1).float() / warmup).clamp(max=1.0)
                lrs = {k: v * warm.view(-1, *[1] * (v.dim() - 1)) for k, v in lrs.items()}
            self.params, loss, self.slots = self.step(self.params, x[idx], y[idx], lrs,
                                                      self.slots, st["t"])
            first = cfg.divergence_factor * loss.clamp(min=floor)
            st["limit"] = torch.where(st["t"] == 0, first, st["limit"])
            st["bad"] = st["bad"] | ~torch.isfinite(loss)
            st["t"] = st["t"] + 1
        st.update(self.params)
        st.update(self.slots)
        return loss

    def advance(self) -> list[tuple[int, Run]]:
        """Train up to the next evaluation of any member or `nonfinite_every` steps; returns
        (key, result) of the members that finished."""
        cfg = self.cfg
        n = min(cfg.nonfinite_every, *(min(cfg.steps, (r.steps_run // cfg.eval_every + 1)
                                           * cfg.eval_every) - r.steps_run for r in self.rows))

        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = getattr(cfg, "precision", "fp32") == "tf32"
        try:
            loss = self._run(n)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
        for r in self.rows:
            r.steps_run += n
        self._judge(loss)
        done = [r for r in self.rows if r.run is not None]
        keep = [i for i, r in enumerate(self.rows) if r.run is None]
        if done:  # compact: finished members cost nothing more
            idx = torch.tensor(keep, dtype=torch.long, device=self.device)
            self.state = {n: v[idx] for n, v in self.state.items()}
            self.rows = [self.rows[i] for i in keep]
            self._unpack()
        return [(r.key, r.run) for r in done]

    def _judge(self, loss: torch.Tensor) -> None:
        """Set `run` of the rows that end now: at an evaluation (divergence, success or the end
        of the budget) or, between evaluations, on a non-finite loss."""
        cfg = self.cfg
        at_eval = [r.steps_run % cfg.eval_every == 0 or r.steps_run >= cfg.steps
                   for r in self.rows]
        bad = (self.state["bad"] | ~(loss <= self.state["limit"])).tolist()
        nonfinite, losses = self.state["bad"].tolist(), loss.tolist()
        correct = self._correct([e and not b for e, b in zip(at_eval, bad, strict=True)])
        n = len(self.data.x_eval)
        for i, r in enumerate(self.rows):
            if at_eval[i]:
                r.acc = None if correct[i] is None else correct[i] / n
                r.peak = max(r.peak, r.acc or 0.0)
                ok = not bad[i] and meets(correct[i], n, cfg.threshold)
                if bad[i] or ok or r.steps_run >= cfg.steps:
                    r.run = Run(r.lr, r.seed, ok, bad[i], r.steps_run, r.acc, r.peak, losses[i])
                    if ok:
                        self.best[r.seed] = max(self.best.get(r.seed, 0.0), r.lr)
            elif nonfinite[i]:
                r.run = Run(r.lr, r.seed, False, True, r.steps_run, None, r.peak, losses[i])
        if self.cancel:
            for i, r in enumerate(self.rows):
                if r.run is None and r.lr < self.best.get(r.seed, 0.0):
                    r.run = Run(r.lr, r.seed, False, False, r.steps_run, r.acc, r.peak,
                                losses[i], cancelled=True)

    @torch.no_grad()
    def _correct(self, wanted: list[bool], chunk: int = 4096) -> list[int | None]:
        """Correct validation answers of the wanted rows; None for the others."""
        rows = [i for i, w in enumerate(wanted) if w]
        out: list[int | None] = [None] * len(wanted)
        if not rows:
            return out
        idx = torch.tensor(rows, device=self.device)
        params = {k: p[idx] for k, p in self.params.items()}
        x, y = self.data.x_eval, self.data.y_eval
        correct = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        for i in range(0, len(x), chunk):
            correct += (self.logits(params, x[i:i + chunk]).argmax(-1) == y[i:i + chunk]).sum(1)
        for i, c in zip(rows, correct.tolist(), strict=True):
            out[i] = c
        return out


def train_func(cfg: EstimateConfig, data: Dataset, lrs: list[float], seeds: list[int],
               compile: str = "off") -> list[Run]:
    """Train one member per (lrs[k], seeds[k]) together; results in the order given."""
    trainer = FuncTrainer(cfg, data, compile=compile)
    keys = trainer.admit(lrs, seeds)
    out: dict[int, Run] = {}
    while trainer.pending:
        out.update(trainer.advance())
    return [out[k] for k in keys]
