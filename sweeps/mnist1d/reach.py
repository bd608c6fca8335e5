"""The best validation accuracy within 1000 SGD steps (batch 128) of milr's default network on
MNIST-1D, at a few rates: the measurement behind its threshold (docs/protocol.md §8).

    python sweeps/mnist1d/reach.py > sweeps/mnist1d/reach.txt
"""
import math

import torch

from milr.data.lookup import load
torch.set_num_threads(1)
ds = load("mnist1d")
X, Y, Xe, Ye = ds.x_train.double(), ds.y_train, ds.x_eval.double(), ds.y_eval
def run(d, w, lr, seed=0, steps=1000):
    g = torch.Generator().manual_seed(seed)
    dims = [40] + [w]*d
    Ws = [torch.randn(a, b, generator=g, dtype=torch.float64)*math.sqrt(2/a) for a, b in zip(dims[:-1], dims[1:])]
    Ws.append(torch.randn(w, 10, generator=g, dtype=torch.float64)/math.sqrt(w))
    bs = [torch.zeros(b, dtype=torch.float64) for b in dims[1:]] + [torch.zeros(10, dtype=torch.float64)]
    ps = Ws + bs
    for p in ps: p.requires_grad_()
    scale = [0.1] + [1]*d
    best = 0; order = torch.randperm(len(X), generator=g)
    def fwd(x):
        h = x
        for i in range(d): h = torch.relu(h @ Ws[i] + bs[i])
        return h @ Ws[d] + bs[d]
    pos = 0
    for t in range(1, steps+1):
        if pos + 128 > len(X): order = torch.randperm(len(X), generator=g); pos = 0
        idx = order[pos:pos+128]; pos += 128
        loss = torch.nn.functional.cross_entropy(fwd(X[idx]), Y[idx])
        if not torch.isfinite(loss): return best, 'div'
        gr = torch.autograd.grad(loss, ps)
        with torch.no_grad():
            for i, (p, gg) in enumerate(zip(ps, gr)):
                s = scale[i] if i < d+1 else scale[i-(d+1)]
                p -= lr*s*gg
        if t % 50 == 0:
            with torch.no_grad(): best = max(best, (fwd(Xe).argmax(1) == Ye).double().mean().item())
    return best, 'ok'
for d, w in [(1,32),(1,256),(2,64),(4,128),(8,32),(8,256)]:
    res = {lr: run(d, w, lr) for lr in [0.01, 0.03, 0.1, 0.3, 1.0]}
    print(d, w, {lr: (round(a,3), s) for lr,(a,s) in res.items()}, flush=True)
