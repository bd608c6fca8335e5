import numpy as np
import pytest
import torch

from milr import EstimateConfig
from milr.base.config import SharpnessConfig
from milr.engine.sharpness import (
    _power,
    hvp_function,
    hvp_operator,
    lanczos,
    top_eigenvalue,
)
from milr.engine.sharpness import sharpness as _sharpness


def sharpness(cfg, data, seed, dtype=torch.float32, **kw):
    return _sharpness(cfg, data, seed, SharpnessConfig(**kw), dtype)


@pytest.mark.parametrize("solver", ["lanczos", "arpack"])
def test_matches_explicit_hessian_on_tiny_network(tiny, solver):
    cfg = EstimateConfig(depth=2, width=3, dataset="gaussians")
    data = tiny
    s = sharpness(cfg, data, seed=3, samples=64, dtype=torch.float64, tol=1e-8, solver=solver)
    # the same network and batch, with the Hessian formed explicitly
    from milr.base.seeding import batch_schedule
    from milr.engine.model import init_weights

    order = batch_schedule(3, len(data.x_train), 1, 64)[0]
    x, y = data.x_train[order].double(), data.y_train[order]
    ws = [w.double() for w in init_weights(3, data.n_inputs, 2, 3, data.classes)]
    shapes = [t.shape for w in ws for t in (w, torch.zeros(w.shape[1]))]
    flat = torch.cat([t.reshape(-1) for w in ws for t in (w, torch.zeros(w.shape[1],
                                                                          dtype=torch.float64))])

    def f(theta):
        parts, i = [], 0
        for shp in shapes:
            n = int(np.prod(shp))
            parts.append(theta[i:i + n].view(shp))
            i += n
        h = x  # a plain MLP written out here, independently of milr's forward pass
        for i in range(0, len(parts), 2):
            h = h @ parts[i] + parts[i + 1]
            h = torch.relu(h) if i + 2 < len(parts) else h
        return torch.nn.functional.cross_entropy(h, y)

    hess = torch.autograd.functional.hessian(f, flat)
    expect = torch.linalg.eigvalsh(hess).max().item()
    assert s.converged and s.method == solver
    assert s.lambda1 == pytest.approx(expect, rel=1e-7)
    assert s.residual < 1e-8


def _quadratic_loss(eigs, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    a = torch.tensor(q @ np.diag(eigs) @ q.T)
    theta = torch.zeros(len(eigs), dtype=torch.float64, requires_grad=True)
    return (lambda p: 0.5 * p[0] @ a @ p[0]), [theta]


def quadratic(eigs, seed=0):
    return hvp_operator(*_quadratic_loss(eigs, seed))


def quadratic_fn(eigs, seed=0):
    return hvp_function(*_quadratic_loss(eigs, seed))


def test_largest_algebraic_not_largest_magnitude():
    eigs = [-10.0, 0.5, 1.0, 2.0, 5.0, 3.0]
    op, _ = quadratic(eigs)
    lam, residual, converged, method = top_eigenvalue(op, seed=0, tol=1e-8)
    assert lam == pytest.approx(5.0, rel=1e-8) and converged and method == "arpack"
    matvec, n, _ = quadratic_fn(eigs)
    lam_t, res_t, conv_t, iters = lanczos(matvec, n, torch.zeros(1, dtype=torch.float64), 0,
                                          tol=1e-10)
    assert lam_t == pytest.approx(5.0, rel=1e-9) and conv_t and iters <= 6
    v, = np.linalg.qr(np.random.default_rng(1).standard_normal((6, 1)))[0].T
    lam_p, _, certified = _power(op, v, 400, 1e-6)
    assert certified and lam_p == pytest.approx(5.0, rel=1e-4)  # the shift keeps -10 out


def test_unconverged_is_flagged():
    eigs = np.linspace(1.0, 1.01, 40)  # tightly clustered: slow to resolve
    op, _ = quadratic(eigs)
    lam, residual, converged, method = top_eigenvalue(op, seed=0, tol=1e-14, max_hvps=2)
    assert not converged and residual > 1e-14
    matvec, n, _ = quadratic_fn(eigs)
    lam, residual, converged, iters = lanczos(matvec, n, torch.zeros(1, dtype=torch.float64), 0,
                                              tol=1e-14, max_iter=3)
    assert not converged and iters == 3 and residual > 1e-14


def test_float32_lanczos_agrees_with_arpack(tiny):
    cfg = EstimateConfig(depth=3, width=32)
    a = sharpness(cfg, tiny, 0, samples=256)
    b = sharpness(cfg, tiny, 0, samples=256, solver="arpack")
    assert a.converged and b.converged and a.lambda1 == pytest.approx(b.lambda1, rel=1e-3)


def test_deterministic_per_seed(tiny):
    cfg = EstimateConfig(depth=2, width=8)
    a, b = sharpness(cfg, tiny, 1, samples=128), sharpness(cfg, tiny, 1, samples=128)
    assert a == b
    assert sharpness(cfg, tiny, 2, samples=128).lambda1 != a.lambda1


def test_preconditioning_by_input_scale_lowers_lambda1(tiny):
    cfg = EstimateConfig(depth=1, width=8, input_lr_scale=0.01)
    plain = sharpness(cfg, tiny, 0, samples=128)
    pre = sharpness(cfg, tiny, 0, samples=128, preconditioned=True)
    assert pre.converged and plain.converged and pre.lambda1 < plain.lambda1
