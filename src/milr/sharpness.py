"""λ1, the largest (algebraic) eigenvalue of the training-loss Hessian at initialisation.

Small pieces, as in locuslab/edge-of-stability, with their silent defaults made explicit: a
Hessian-vector product (double backward) and Lanczos with a seeded start vector and a residual
check. The default solver is a Lanczos iteration in torch on the model's device (full
reorthogonalisation; its vectors stay on the GPU, which matters at tens of millions of
parameters); `solver="arpack"` uses scipy's `eigsh(which="LA")` over a `LinearOperator`. If
ARPACK does not converge, a shifted power iteration is tried. A value that does not meet the
tolerance is returned with `converged=False`, never silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from .config import EstimateConfig
from .data import Dataset
from .model import init_weights, member_seed
from .train import batch_schedule


@dataclass(frozen=True)
class Sharpness:
    seed: int
    lambda1: float  # largest algebraic eigenvalue of the (optionally preconditioned) Hessian
    residual: float  # ||H v - λ v|| / |λ| for the returned unit vector v
    converged: bool  # residual <= tol
    hvps: int  # Hessian-vector products spent
    method: str  # "lanczos" (torch), "arpack" or "power"


def network_loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the plain MLP given as [W0, b0, W1, b1, ...] (W: fan_in x fan_out)."""
    h = x
    n = len(params) // 2
    for i in range(n):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < n - 1:
            h = torch.relu(h)
    return torch.nn.functional.cross_entropy(h, y)


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
    gen = torch.Generator().manual_seed(member_seed(seed, 2))
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


def top_eigenvalue(op: LinearOperator, count: list[int], seed: int, tol: float = 1e-3,
                   max_hvps: int = 300) -> tuple[float, float, bool, str]:
    """Largest algebraic eigenvalue: Lanczos first, then a shifted power iteration."""
    rng = np.random.default_rng(member_seed(seed, 2))
    v0 = rng.standard_normal(op.shape[0])
    method = "arpack"
    try:
        vals, vecs = eigsh(op, k=1, which="LA", v0=v0, tol=tol / 10, maxiter=max_hvps,
                           ncv=min(op.shape[0], 20))
        lam, v = float(vals[0]), vecs[:, 0]
    except ArpackNoConvergence as e:
        method = "power"
        lam, v = _power(op, v0, max_hvps, e)
    v = v / np.linalg.norm(v)
    residual = float(np.linalg.norm(op.matvec(v) - lam * v) / max(abs(lam), 1e-30))
    return lam, residual, residual <= tol, method


def _power(op: LinearOperator, v0: np.ndarray, iters: int, partial) -> tuple[float, np.ndarray]:
    """Power iteration on H + c I, c >= |most negative eigenvalue|, so it finds the largest
    algebraic eigenvalue even where a negative one has the larger magnitude."""
    v = v0 / np.linalg.norm(v0)
    lam_abs = abs(float(v @ op.matvec(v)))
    c = lam_abs + 1.0
    if getattr(partial, "eigenvalues", None) is not None and len(partial.eigenvalues):
        c = max(c, 2 * abs(float(partial.eigenvalues[0])))
    lam = 0.0
    for _ in range(iters):
        w = op.matvec(v) + c * v
        lam = float(v @ w) - c
        v = w / np.linalg.norm(w)
    return lam, v


def sharpness(cfg: EstimateConfig, data: Dataset, seed: int, samples: int = 1024,
              preconditioned: bool = False, tol: float = 1e-3, max_hvps: int = 100,
              dtype: torch.dtype = torch.float32, solver: str = "lanczos") -> Sharpness:
    """λ1 at initialisation of seed `seed`'s network on its first `samples` training examples."""
    device = data.x_train.device
    order = batch_schedule(seed, len(data.x_train), 1, min(samples, len(data.x_train)))[0]
    x = data.x_train[order.to(device)].to(dtype)
    y = data.y_train[order.to(device)]
    params = []
    for w in init_weights(seed, data.n_inputs, cfg.depth, cfg.width, data.classes):
        params += [w.to(device, dtype).requires_grad_(),
                   torch.zeros(w.shape[1], device=device, dtype=dtype, requires_grad=True)]
    scale = None
    if preconditioned:
        scale = [cfg.input_lr_scale] * 2 + [1.0] * (len(params) - 2)
    loss = lambda p: network_loss(p, x, y)  # noqa: E731
    if solver == "lanczos":
        matvec, n, count = hvp_function(loss, params, scale)
        lam, residual, converged, _ = lanczos(matvec, n, params[0], seed, tol, max_hvps)
        method = "lanczos"
    elif solver == "arpack":
        op, count = hvp_operator(loss, params, scale)
        lam, residual, converged, method = top_eigenvalue(op, count, seed, tol, max_hvps)
    else:
        raise ValueError(f"solver must be lanczos or arpack, got {solver!r}")
    return Sharpness(seed, lam, residual, converged, count[0], method)


def sharpness_seeds(cfg: EstimateConfig, samples: int = 1024, preconditioned: bool = False,
                    tol: float = 1e-3, data: Dataset | None = None) -> list[Sharpness]:
    """λ1 for every seed of cfg (seed, seed + 1, ...) on cfg's data set and device."""
    from .data import load
    from .train import resolve_device

    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}")
    data = (data or load(cfg.dataset, cfg.data_dir)).to(resolve_device(cfg.device))
    return [sharpness(cfg, data, s, samples, preconditioned, tol)
            for s in range(cfg.seed, cfg.seed + cfg.seeds)]
