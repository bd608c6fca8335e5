"""λ1, the largest (algebraic) eigenvalue of the training-loss Hessian at initialisation.

Small pieces, as in locuslab/edge-of-stability, with their silent defaults made explicit: a
Hessian-vector product (double backward) and Lanczos with a seeded start vector and a residual
check. The default solver is a Lanczos iteration in torch on the model's device (full
reorthogonalisation; its vectors stay on the GPU, which matters at tens of millions of
parameters); `solver="arpack"` uses scipy's `eigsh(which="LA")` over a `LinearOperator`. If
ARPACK does not converge, a shifted power iteration is tried. A value that does not meet the
tolerance is returned with `converged=False`, never silently; so is a product that is not finite
(the operator overflowed float32: the solver stops there, its estimate NaN, residual inf).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

from ..base.config import NetworkConfig, SharpnessConfig
from ..base.cost import check_sharpness_memory
from ..base.device import available_memory, resolve_device
from ..base.seeding import START_VECTOR, batch_schedule, member_seed
from ..data.formats import Dataset
from ..data.lookup import load
from .model import Arch, Ensemble, Layout, loss_value


@dataclass(frozen=True)
class Sharpness:
    seed: int
    lambda1: float | None  # largest algebraic eigenvalue; None unless converged
    last_estimate: float  # the solver's last value, converged or not (for diagnosis only)
    residual: float  # ||H v - λ v|| / |λ| for the returned unit vector v
    converged: bool  # residual <= tol (and, for the power fallback, a certified shift)
    hvps: int  # Hessian-vector products spent
    method: str  # "lanczos" (torch), "arpack" or "power"
    samples: int  # training examples in the batch actually used


def network(cfg: NetworkConfig, data: Dataset, seed: int,
            dtype: torch.dtype = torch.float32) -> Ensemble:
    """Seed `seed`'s network at initialisation as the engine builds it (K = 1), with gradients:
    under cfg's architecture and parametrisation (its stored weights and forward multipliers)."""
    layout = Layout.of(cfg, data.n_inputs)
    net = Ensemble.create([seed], data.n_inputs, cfg.depth, cfg.width, data.classes,
                          data.x_train.device, cfg.output_init, layout, arch=Arch.of(cfg))
    return Ensemble([w.to(dtype).requires_grad_() for w in net.weights],
                    [b.to(dtype).requires_grad_() for b in net.biases], net.multipliers,
                    arch=net.arch)


def network_loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 loss: str = "ce", multipliers: tuple[float, ...] | None = None,
                 arch: Arch | None = None) -> torch.Tensor:
    """The training loss of one member given as [W0, b0, W1, b1, ...] (an Ensemble's
    `parameters()`, K = 1) on the batch x (B, n_in), y (B,): the engine's forward pass, with
    the parametrisation's forward multipliers (default 1) and `arch` (default a ReLU MLP)."""
    net = Ensemble(params[0::2], params[1::2], multipliers, arch=arch)
    return loss_value(net.forward(x), y.unsqueeze(0), loss)[0]


def hvp_function(loss_fn, params: list[torch.Tensor], scale: list[float] | None = None):
    """v -> S^1/2 H S^1/2 v on flat torch vectors (S: per-parameter lr scales); counts calls.

    With S = I this is the Hessian; with the input layer's lr scale in S it is the curvature
    that SGD with that per-layer rate actually sees (its stability edge is 2 / λ1).
    """
    sizes = [p.numel() for p in params]
    root = [math.sqrt(s) for s in (scale or [1.0] * len(params))]
    grads = torch.autograd.grad(loss_fn(params), params, create_graph=True)
    count = [0]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        count[0] += 1
        vs = [(c * r).view_as(p) for c, p, r in zip(v.split(sizes), params, root, strict=True)]
        dot = sum((g * u).sum() for g, u in zip(grads, vs, strict=True))
        hv = torch.autograd.grad(dot, params, retain_graph=True)
        return torch.cat([(h * r).reshape(-1) for h, r in zip(hv, root, strict=True)])

    return matvec, sum(sizes), count


def hvp_operator(loss_fn, params: list[torch.Tensor], scale: list[float] | None = None):
    """The same product as a scipy LinearOperator on float64 numpy vectors."""
    matvec, n, count = hvp_function(loss_fn, params, scale)
    p0 = params[0]

    def np_matvec(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.asarray(v, dtype=np.float64).ravel()).to(p0.device, p0.dtype)
        return matvec(t).double().cpu().numpy()

    return LinearOperator((n, n), matvec=np_matvec, dtype=np.float64), count


def lanczos(matvec, n: int, like: torch.Tensor, seed: int, tol: float = 1e-3,
            max_iter: int = 100) -> tuple[float, float, bool, int]:
    """Largest algebraic eigenvalue by Lanczos with full reorthogonalisation, on like's device.

    Stops when the Ritz estimate |β s_last| / |θ| is below tol / 10, then spends one more
    product on the true relative residual ||H y - θ y|| / |θ| of the Ritz vector y.
    Returns (θ, residual, converged, iterations).
    """
    gen = torch.Generator().manual_seed(member_seed(seed, START_VECTOR))
    v = torch.randn(n, generator=gen, dtype=torch.float64).to(like.device, like.dtype)
    basis = [v / v.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    theta, s = 0.0, np.ones(1)
    for _ in range(min(max_iter, n)):
        w = matvec(basis[-1])
        alphas.append(float(w @ basis[-1]))
        stack = torch.stack(basis)  # (j, n)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - stack.T @ (stack @ w)
        beta = float(w.norm())
        if not math.isfinite(alphas[-1] + beta):  # a product overflowed: nothing to solve
            return math.nan, math.inf, False, len(alphas)
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        vals, vecs = np.linalg.eigh(t)
        theta, s = float(vals[-1]), vecs[:, -1]
        if beta * abs(s[-1]) <= tol / 10 * max(abs(theta), 1e-30) or beta < 1e-12:
            break
        betas.append(beta)
        basis.append(w / beta)
    y = torch.stack(basis[: len(s)]).T @ torch.from_numpy(s).to(like.device, like.dtype)
    y = y / y.norm()
    residual = float((matvec(y) - theta * y).norm()) / max(abs(theta), 1e-30)
    return theta, residual, residual <= tol, len(alphas)


class _Spent(Exception):
    """The budget of Hessian-vector products is spent."""


class _NotFinite(Exception):
    """A Hessian-vector product is not finite (it overflowed): no eigenvalue can be found."""


def top_eigenvalue(op: LinearOperator, seed: int, tol: float = 1e-3,
                   max_hvps: int = 300) -> tuple[float, float, bool, str]:
    """Largest algebraic eigenvalue: ARPACK's Lanczos first, then a shifted power iteration, in
    at most `max_hvps` products all told. ARPACK's `maxiter` counts restarts (each up to `ncv`
    products), so the products are counted here: ARPACK is stopped one short of the budget (the
    last one checks its residual); if it gives up earlier, the power iteration gets what is
    left. A run out of budget is returned as not converged."""
    rng = np.random.default_rng(member_seed(seed, START_VECTOR))
    v0 = rng.standard_normal(op.shape[0])
    spent = [0]  # products through the capped operators (the last residual check aside)

    def capped(limit: int) -> LinearOperator:
        def matvec(v: np.ndarray) -> np.ndarray:
            if spent[0] >= limit:
                raise _Spent
            spent[0] += 1
            hv = op.matvec(v)
            if not np.isfinite(hv).all():
                raise _NotFinite
            return hv
        return LinearOperator(op.shape, matvec=matvec, dtype=np.float64)

    try:
        vals, vecs = eigsh(capped(max(1, max_hvps - 1)), k=1, which="LA", v0=v0,
                           tol=tol / 10, maxiter=max_hvps, ncv=min(op.shape[0], 20))
    except (ArpackNoConvergence, _Spent):
        left = max_hvps - spent[0]
        if left < 4:  # nothing a power iteration could certify
            return math.nan, math.inf, False, "arpack"
        try:
            lam, residual, certified = _power(capped(max_hvps), v0, left - 1, tol)
        except (_Spent, _NotFinite):
            return math.nan, math.inf, False, "power"
        return lam, residual, certified and residual <= tol, "power"
    except (ArpackError, _NotFinite):  # it failed outright (a product overflowed, say)
        return math.nan, math.inf, False, "arpack"
    lam, v = float(vals[0]), vecs[:, 0] / np.linalg.norm(vecs[:, 0])
    residual = float(np.linalg.norm(op.matvec(v) - lam * v) / max(abs(lam), 1e-30))
    return lam, residual, residual <= tol, "arpack"


def _power(op: LinearOperator, v0: np.ndarray, iters: int, tol: float
           ) -> tuple[float, float, bool]:
    """Power iteration on H + c I, which finds the largest algebraic eigenvalue only if
    c >= |most negative eigenvalue|. c comes from ρ, the largest magnitude, found first by power
    iteration on H² (its norm converges whatever the signs); c = 1.1 ρ is trusted only if H² v =
    ρ² v to `tol` (returned as `certified`). Half the products go to each stage.
    Returns (λ, relative residual, certified)."""
    v = v0 / np.linalg.norm(v0)
    rho, rho_res = 0.0, math.inf
    for _ in range(max(1, iters // 4)):
        hv = op.matvec(v)
        hhv = op.matvec(hv)
        rho2 = float(v @ hhv)
        rho_res = float(np.linalg.norm(hhv - rho2 * v)) / max(abs(rho2), 1e-30)
        rho = math.sqrt(max(rho2, 0.0))
        v = hhv / max(np.linalg.norm(hhv), 1e-300)
        if rho_res <= tol / 10:
            break
    c = 1.1 * rho + 1e-12
    v = v0 / np.linalg.norm(v0)
    lam = 0.0
    for _ in range(max(1, iters // 2)):
        w = op.matvec(v) + c * v
        lam = float(v @ w) - c
        v = w / np.linalg.norm(w)
    residual = float(np.linalg.norm(op.matvec(v) - lam * v) / max(abs(lam), 1e-30))
    return lam, residual, rho_res <= tol


def sharpness(cfg: NetworkConfig, data: Dataset, seed: int,
              scfg: SharpnessConfig | None = None,
              dtype: torch.dtype = torch.float32) -> Sharpness:
    """λ1 at initialisation of seed `seed`'s network on `scfg.samples` training examples (the
    first batch of a run of that size: the data order of the seed)."""
    scfg = scfg or SharpnessConfig()
    samples = min(scfg.samples, len(data.x_train))
    device = data.x_train.device
    order = batch_schedule(seed, len(data.x_train), 1, samples)[0].to(device)
    x, y = data.x_train[order].to(dtype), data.y_train[order]
    params, loss, scale = _loss_of(cfg, data, seed, x, y, dtype, scfg.preconditioned)
    if scfg.solver == "lanczos":
        matvec, n, count = hvp_function(loss, params, scale)
        lam, residual, converged, _ = lanczos(matvec, n, params[0], seed, scfg.tol,
                                              scfg.max_hvps)
        method = "lanczos"
    else:
        op, count = hvp_operator(loss, params, scale)
        lam, residual, converged, method = top_eigenvalue(op, seed, scfg.tol, scfg.max_hvps)
    return Sharpness(seed, lam if converged else None, lam, residual, converged, count[0],
                     method, samples)


def _loss_of(cfg: NetworkConfig, data: Dataset, seed: int, x: torch.Tensor, y: torch.Tensor,
             dtype: torch.dtype, preconditioned: bool):
    """Seed's network at initialisation on the batch x, y: its tensors, the loss as their
    function, and each tensor's rate multiple where preconditioned (None: all 1). A model of
    one's own (cfg.model) trains every tensor at one rate, so its S is the identity."""
    if cfg.model is not None:
        from .func import member_loss

        return *member_loss(cfg, data, seed, x, y, dtype), None
    net = network(cfg, data, seed, dtype)
    scale = Layout.of(cfg, data.n_inputs).parameter_lr_scales() if preconditioned else None
    return (net.parameters(),
            lambda p: network_loss(p, x, y, cfg.loss, net.multipliers, net.arch), scale)


def _ready(cfg: NetworkConfig, scfg: SharpnessConfig, data: Dataset | None) -> Dataset:
    """cfg's data set (loaded unless given) on cfg's device, once λ1 is known to fit there."""
    device = resolve_device(cfg.device)
    data = data or load(cfg.dataset, cfg.data_dir)
    if cfg.model is None:  # the MLP's memory model: a model's size is not known ahead
        check_sharpness_memory(cfg, scfg, data.n_inputs, data.classes,
                               available_memory(device))
    else:  # a factory that cannot build, or whose seeds are one module, is refused up front
        from .func import check_seeds

        check_seeds(cfg, data)
    return data.to(device)


def sharpness_seeds(cfg: NetworkConfig, scfg: SharpnessConfig | None = None,
                    data: Dataset | None = None,
                    on_seed: Callable[[int], None] | None = None) -> list[Sharpness]:
    """λ1 for every seed of cfg (seed, seed + 1, ...) on cfg's data set and device;
    `on_seed(seed)` as each seed begins, once the data is ready (progress)."""
    scfg = scfg or SharpnessConfig()
    data = _ready(cfg, scfg, data)
    results = []
    for s in range(cfg.seed, cfg.seed + cfg.seeds):
        if on_seed is not None:
            on_seed(s)
        results.append(sharpness(cfg, data, s, scfg))
    return results


def plain_and_preconditioned(cfg: NetworkConfig, scfg: SharpnessConfig,
                             data: Dataset | None = None) -> list[tuple[Sharpness, Sharpness]]:
    """λ1 and the preconditioned λ1 (`scfg`'s solver settings; its `preconditioned` aside) of
    every seed of cfg, on its data loaded once: what `estimate` reports and a sweep records."""
    data = _ready(cfg, scfg, data)
    both = [replace(scfg, preconditioned=p) for p in (False, True)]
    return [(sharpness(cfg, data, s, both[0]), sharpness(cfg, data, s, both[1]))
            for s in range(cfg.seed, cfg.seed + cfg.seeds)]
