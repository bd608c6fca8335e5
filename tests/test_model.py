import torch

from milr.engine.model import Ensemble, init_weights


def test_he_init_scale():
    ws = init_weights(0, n_in=400, depth=2, width=300, classes=10)
    assert [tuple(w.shape) for w in ws] == [(400, 300), (300, 300), (300, 10)]
    assert abs(float(ws[0].var()) * 400 / 2 - 1) < 0.02  # He: variance 2 / fan_in
    assert abs(float(ws[2].var()) * 300 - 1) < 0.1  # output layer: gain 1
    assert torch.equal(init_weights(0, 400, 2, 300, 10)[1], ws[1])


def test_manual_sgd_step_matches_autograd():
    torch.manual_seed(0)
    seeds, k, b, n_in = [0, 1, 1], 3, 8, 5
    net = Ensemble.create(seeds, n_in, depth=3, width=7, classes=4)
    for bias in net.biases:  # non-zero biases exercise the bias gradient too
        bias.normal_()
    ref = [p.clone().requires_grad_() for p in net.weights + net.biases]
    x, y = torch.randn(k, b, n_in), torch.randint(0, 4, (k, b))
    lr = torch.tensor([0.1, 0.5, 2.0]).view(k, 1, 1)
    lrs = [lr * 0.3] + [lr] * 3

    loss = net.sgd_step(x, y, lrs)

    h, nw = x, len(net.weights)
    for i in range(nw):
        h = torch.baddbmm(ref[nw + i], h, ref[i])
        h = torch.relu(h) if i < nw - 1 else h
    per_member = torch.nn.functional.cross_entropy(
        h.reshape(-1, 4), y.reshape(-1), reduction="none").view(k, b).mean(1)
    per_member.sum().backward()
    torch.testing.assert_close(loss, per_member.detach())
    for i, p in enumerate(net.weights + net.biases):
        expect = ref[i].detach() - lrs[i % nw] * ref[i].grad
        torch.testing.assert_close(p, expect, rtol=1e-5, atol=1e-6)


def test_select_keeps_members():
    net = Ensemble.create([0, 1, 2], 4, 2, 5, 3)
    sub = net.select(torch.tensor([2, 0]))
    assert sub.size == 2
    assert torch.equal(sub.weights[1][0], net.weights[1][2])


def test_shared_input_forward_equals_per_member():
    net = Ensemble.create([0, 1], 4, 2, 5, 3)
    x = torch.randn(6, 4)
    torch.testing.assert_close(net.forward(x), net.forward(x.expand(2, 6, 4).contiguous()))
