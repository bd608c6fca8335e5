"""η* of any PyTorch model: a factory's module, one per member, all trained at once by torch.func.

`--model PATH.py:NAME` names a function NAME(depth, width, in_shape, classes) -> nn.Module
(`Factory`). Each seed's module is built once, under torch.manual_seed of the seed's weight
stream (`seeding.member_seed(seed, WEIGHTS)`), so its own initialisation is used; a private copy
is moved to the device and never the user's object. Seeds whose modules are one object are
refused, seeds of equal weights noted (`Distinct`). The members' tensors are stacked
(`torch.func.stack_module_state`) and one step of all of them is `vmap(grad_and_value)` over
`functional_call` (`Program`), the loss being the built-in engine's `loss_value`.

Everything else is the built-in engine's own code: `FuncTrainer` is a `train.BatchedTrainer`
whose network is a `Stack` (the interface of `model.Ensemble` the trainer uses), so the search,
verdicts, divergence rules, curves, also_steps, warm-up, weight decay and every optimizer's rule
(`model.OptimUpdate.tensor`, per tensor, at one uniform rate) are shared, not copied.

Modes: a training step (and the loss after the budget) runs the module in training mode, each
member's buffers (BatchNorm's running statistics) updated by its own step only; an evaluation
runs it in eval mode, on the whole validation set (no finiteness bound is known for an arbitrary
module, so there is no early exit). Random operations (dropout) draw different numbers per member
(vmap's randomness "different") from a stream of the trainer's own, seeded from cfg.seed and
saved between rounds: a search repeats exactly, but a member's draws depend on which members
train beside it (results rows say so: `search.depends_on`).
"""

from __future__ import annotations

import copy
import sys
import traceback
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from ..base.config import EstimateConfig
from ..base.seeding import RANDOMNESS, WEIGHTS, member_seed
from ..base.spec import Loaded, call, load
from ..data.formats import Dataset
from .model import OptimUpdate, Rates, loss_value
from .train import EVAL_CHUNK, BatchedTrainer

MODEL = "--model"

# The most bytes one operation of a vmap call may output (members × examples × the module's
# largest intermediate per example). Beyond a few MiB a CPU runs a module's kernels out of cache
# and on freshly mapped pages: a CNN of 16 channels on 28 × 28 images steps at half speed with 8
# members in one call (benchmarks/README.md, what --model costs), an MLP's per-example tensors
# are small enough that all its members still run as one.
CALL_BYTES = 8 << 20
# Examples of the meta pass that measures a module (`footprint`): a prime, so that a tensor with
# a dimension of this size is, but for a rare coincidence, one per example.
PROBE_EXAMPLES = 11


def input_shape(data: Dataset) -> tuple[int, ...]:
    """One input's shape as the model receives it: the data set's `in_shape` where it has one
    (images: (channels, height, width)), else its flat feature count."""
    return tuple(int(n) for n in (getattr(data, "in_shape", None) or (data.n_inputs,)))


def _cuda_devices() -> list[int]:
    """The CUDA devices whose random state a build may touch (none where CUDA is not in use)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


@dataclass(frozen=True)
class Factory:
    """cfg.model loaded, with the arguments every member is built with."""

    loaded: Loaded
    spec: str
    args: tuple  # depth, width, in_shape, classes

    @classmethod
    def of(cls, cfg, data: Dataset) -> Factory:
        """cfg's factory (an EstimateConfig or NetworkConfig with a model) for `data`."""
        return cls(load(cfg.model, MODEL), cfg.model,
                   (cfg.depth, cfg.width, input_shape(data), data.classes))

    def build(self, seed: int) -> nn.Module:
        """Seed `seed`'s module as the factory returns it, built under torch.manual_seed of the
        seed's weight stream (the global random state is restored afterwards)."""
        with torch.random.fork_rng(devices=_cuda_devices()):
            torch.manual_seed(member_seed(seed, WEIGHTS))
            module = call(self.loaded, MODEL, *self.args)
        if not isinstance(module, nn.Module):
            raise ValueError(f"{MODEL} {self.spec!r} returned a {type(module).__name__}, not a "
                             "torch.nn.Module")
        if not any(p.requires_grad for p in module.parameters()):
            raise ValueError(f"{MODEL} {self.spec!r} returned a module with no trainable "
                             "parameters: there is nothing to train")
        return module

    def private(self, seed: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
        """A copy of seed's module of our own on `device`, its floating tensors in `dtype`:
        the user's object is never moved, cast or trained."""
        return self.own(self.build(seed), device, dtype)

    def own(self, module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        """A copy of a module the factory returned, on `device` in `dtype`."""
        try:
            return copy.deepcopy(module).to(device=device, dtype=dtype)
        except Exception as e:  # a module holding what cannot be copied (a lock, a file, ...)
            raise ValueError(f"{MODEL} {self.spec!r}: its module cannot be copied "
                             f"({type(e).__name__}: {e}); milr trains copies and never the "
                             "module the factory returned") from None


class Distinct:
    """The members' initial modules told apart, seed by seed. A factory that returns one module
    it keeps would make every member one object: refused. Seeds whose weights are all equal
    (a loaded checkpoint, zeros, a generator of the factory's own) still differ in data order
    and dropout: a note says so once, since their spread is then not one over initialisations.
    One seed has nothing to be compared with."""

    def __init__(self, factory: Factory, device: torch.device, dtype: torch.dtype):
        self.factory, self.device, self.dtype = factory, device, dtype
        self.returned: dict[int, weakref.ref] = {}  # seed -> the factory's object, while alive
        self.prints: dict[tuple, list[tuple[int, list[torch.Tensor]]]] = {}  # sums -> tensors

    def module(self, seed: int) -> nn.Module:
        """Seed's module, our copy (`Factory.own`), checked against every earlier seed's."""
        returned = self.factory.build(seed)
        module = self.factory.own(returned, self.device, self.dtype)
        self.check(seed, returned, module)
        return module

    def check(self, seed: int, returned: nn.Module, module: nn.Module) -> None:
        """Refuse seed's module (the factory's object, and our copy) where an earlier seed's
        was the same object; note it where every parameter and buffer equals an earlier's."""
        spec = self.factory.spec
        for other, ref in self.returned.items():
            if ref() is returned:
                raise ValueError(
                    f"{MODEL} {spec!r} returned the same module object for seeds {other} "
                    f"and {seed} (one it keeps?): every seed would train the same network; "
                    "build a new module at every call")
        tensors = [t.detach() for t in (*module.parameters(), *module.buffers())]
        key = tuple(float(t.double().sum()) for t in tensors)
        for other, seen in self.prints.get(key, []):
            if all(torch.equal(a, b) for a, b in zip(tensors, seen, strict=True)):
                self._note(other, seed)
                break
        self.returned[seed] = weakref.ref(returned)
        self.prints.setdefault(key, []).append((seed, tensors))

    def _note(self, other: int, seed: int) -> None:
        """One line on stderr, once per factory and cell in a process (a search and its λ1, a
        sweep's tasks of one cell): the run goes on."""
        key = (self.factory.spec, self.factory.args)
        if key in NOTED:
            return
        NOTED.add(key)
        depth, width = key[1][:2]
        sys.stderr.write(
            f"milr: note: {MODEL} {key[0]!r} built identical initial weights (parameters and "
            f"buffers) for seeds {other} and {seed} at depth {depth}, width {width}: they differ "
            "only in data order and dropout, so their spread is not a spread over "
            "initialisations\n")


# (spec, factory arguments) whose identical seeds were noted in this process
NOTED: set[tuple] = set()


class _Largest(TorchDispatchMode):
    """Notes the bytes of the largest tensor with a dimension of `size` any operation outputs."""

    def __init__(self, size: int):
        super().__init__()
        self.size, self.bytes = size, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.bytes = max([self.bytes] + [t.numel() * t.element_size() for t in tree_leaves(out)
                                         if isinstance(t, torch.Tensor) and self.size in t.shape])
        return out


def footprint(base: nn.Module, in_shape: tuple[int, ...]) -> tuple[float, int]:
    """What one example costs a module on the meta device (`base`): the FLOPs of its forward
    pass and the bytes of its largest intermediate tensor, from one pass in eval mode that
    computes nothing. A module that cannot run on meta tensors (it reads a value, or makes
    tensors of its own on a device) counts as linear: 2 FLOPs per parameter, size unknown (0)."""
    params = list(base.parameters())
    x = torch.empty((PROBE_EXAMPLES, *in_shape), device="meta", dtype=params[0].dtype)
    flops, largest = FlopCounterMode(display=False), _Largest(PROBE_EXAMPLES)
    try:
        with torch.no_grad(), flops, largest:
            base.eval()(x)
    except Exception:  # noqa: BLE001 -- an estimate only: the probe refuses what cannot train
        return 2.0 * sum(p.numel() for p in params), 0
    finally:
        base.train(True)
    return flops.get_total_flops() / PROBE_EXAMPLES, largest.bytes // PROBE_EXAMPLES


def per_call(examples: int, largest: int) -> int | None:
    """Members per vmap call when each brings `examples` examples of `largest` bytes at most
    (`CALL_BYTES`); None (all at once) where the size is unknown."""
    return max(1, CALL_BYTES // (examples * largest)) if largest else None


class Program:
    """The functions of one module that every Stack of it runs: a training step's gradients and
    losses, logits in training mode (per-member batches of `batch`) and in eval mode (a shared
    batch of `eval_images`, at most `eval_chunk`).

    The members of one call are split into vmap's chunks of `CALL_BYTES` (`footprint`): on a
    CPU the module's kernels then run in cache. In float64 no result depends on the split; in
    float32 a convolution's gradient may differ in its last bits between a member computed alone
    and one computed with others (as between a stack of one member and one of several)."""

    def __init__(self, module: nn.Module, in_shape: tuple[int, ...], loss: str, spec: str,
                 source: str, batch: int = 1, eval_chunk: int = EVAL_CHUNK):
        self.base = copy.deepcopy(module).to("meta")  # structure only: tensors come per call
        self.in_shape, self.loss, self.spec, self.source = in_shape, loss, spec, source
        self.trainable = tuple(n for n, p in module.named_parameters() if p.requires_grad)
        self.flops, largest = footprint(self.base, in_shape)
        self.members_per_call = per_call(batch, largest)
        self.eval_images = max(1, min(eval_chunk, CALL_BYTES // largest) if largest
                               else eval_chunk)
        self.eval_members = per_call(self.eval_images, largest)

    @staticmethod
    def _batched(fn, members: int, per: int | None, **kw):
        """fn vmapped over `members` members, `per` to a call (all in one where they fit)."""
        return vmap(fn, randomness="different", **kw,
                    chunk_size=per if per is not None and per < members else None)

    def grads(self, params: dict, fixed: dict, x: torch.Tensor, y: torch.Tensor):
        """Every member's gradients, and its loss and buffers after the step, on its batch."""
        return self._batched(grad_and_value(self._member_loss, has_aux=True), len(x),
                             self.members_per_call)(params, fixed, x, y)

    def train_logits(self, params: dict, fixed: dict, x: torch.Tensor):
        """Every member's logits and buffers in training mode on its own batch x (K, B, ...)."""
        return self._batched(self._member_logits, len(x), self.members_per_call)(
            params, fixed, x)

    def eval_logits(self, params: dict, fixed: dict, x: torch.Tensor):
        """Every member's logits and buffers on one shared batch x (N, ...)."""
        members = len(next(iter(params.values())))
        return self._batched(self._member_logits, members, self.eval_members,
                             in_dims=(0, 0, None))(params, fixed, x)

    def _member_logits(self, params: dict, fixed: dict, x: torch.Tensor
                       ) -> tuple[torch.Tensor, dict]:
        """One member's logits on x (B, ...) reshaped to (B, *in_shape), and its fixed tensors
        after the call (copies: a module in training mode updates its buffers in place)."""
        fixed = {k: v.clone() for k, v in fixed.items()}
        out = functional_call(self.base, (params, fixed), (x.reshape(len(x), *self.in_shape),))
        return out, fixed

    def _member_loss(self, params: dict, fixed: dict, x: torch.Tensor, y: torch.Tensor
                     ) -> tuple[torch.Tensor, dict]:
        """One member's training loss (`model.loss_value`), with its buffers after the step."""
        logits, fixed = self._member_logits(params, fixed, x)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"the module returns a {type(logits).__name__}, not a tensor of "
                            "logits")
        return loss_value(logits[None], y[None], self.loss)[0], fixed

    @contextmanager
    def mode(self, training: bool) -> Iterator[None]:
        """The module in training or eval mode for the calls inside, translating what torch.func
        or the module raises into one line (`refusal`)."""
        self.base.train(training)
        try:
            yield
        except Exception as e:  # the user's module: whatever it raises is one line
            raise self.refusal(e) from None
        finally:
            self.base.train(True)

    def refusal(self, e: BaseException) -> ValueError:
        """One line naming what the module did that torch.func could not run, and where in the
        factory's file."""
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if Path(f.filename).resolve() == Path(self.source)]
        where = (f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} "
                 f"({(frames[-1].line or '').strip()})" if frames else "")
        text = (str(e).strip().splitlines() or [""])[0]
        if ".item()" in text or "data-dependent control flow" in text:
            text = ("it calls .item() or branches on a tensor's value (data-dependent control "
                    "flow), which torch.func.vmap cannot batch")
        else:
            text = f"{type(e).__name__}: {text[:300]}"
        return ValueError(f"{MODEL} {self.spec!r}: the module cannot run on inputs of shape "
                          f"{self.in_shape} under torch.func{where}: {text}")


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A stacked tensor (K, ...) as (K, 1, n), where a rate (K, 1, 1) broadcasts over it (a
    view where it can be: a parameter is updated in place through it)."""
    return t.reshape(len(t), 1, -1)


class Stack:
    """K members of one module as stacked tensors (K, ...): the trainable parameters, the fixed
    tensors (buffers and frozen parameters: each member's own) and the optimizer's state (one
    (K, 1, n) tensor per parameter and slot). The part of `model.Ensemble`'s interface that
    `BatchedTrainer` uses: create (`of`), cat, select, step, forward, evaluate."""

    def __init__(self, program: Program, params: dict[str, torch.Tensor],
                 fixed: dict[str, torch.Tensor], state: dict[str, list[torch.Tensor]]):
        self.program, self.params, self.fixed, self.state = program, params, fixed, state

    @classmethod
    def of(cls, program: Program, modules: list[nn.Module], slots: tuple[str, ...]) -> Stack:
        """One member per module (a seed's module may repeat), its optimizer state at zero."""
        params, buffers = stack_module_state(modules)
        trainable = {n: params[n].detach() for n in program.trainable}
        fixed = {**{n: p.detach() for n, p in params.items() if n not in trainable}, **buffers}
        state = {s: [torch.zeros_like(_flat(p)) for p in trainable.values()] for s in slots}
        return cls(program, trainable, fixed, state)

    @property
    def size(self) -> int:
        return len(next(iter(self.params.values())))

    @staticmethod
    def cat(parts: list[Stack]) -> Stack:
        """The members of all parts, in order (new members joining a running stack)."""
        first = parts[0]
        return Stack(first.program,
                     {n: torch.cat([p.params[n] for p in parts]) for n in first.params},
                     {n: torch.cat([p.fixed[n] for p in parts]) for n in first.fixed},
                     {s: [torch.cat(ts) for ts in zip(*(p.state[s] for p in parts), strict=True)]
                      for s in first.state})

    def select(self, keep: torch.Tensor) -> Stack:
        """The members at indices `keep`."""
        return Stack(self.program, {n: t[keep] for n, t in self.params.items()},
                     {n: t[keep] for n, t in self.fixed.items()},
                     {s: [t[keep] for t in ts] for s, ts in self.state.items()})

    def step(self, x: torch.Tensor, y: torch.Tensor, update: OptimUpdate, loss: str = "ce"
             ) -> torch.Tensor:
        """One training step of every member on its own batch x (K, B, ...), y (K, B): the loss
        before it (K,). The gradients of all members in one vmap, then `update`'s per-tensor
        rule (torch.optim's) on each parameter; each member's buffers as its step left them."""
        with self.program.mode(training=True):
            grads, (values, fixed) = self.program.grads(self.params, self.fixed, x, y)
        self.fixed = {n: t.detach() for n, t in fixed.items()}
        with torch.no_grad():
            for j, (name, p) in enumerate(self.params.items()):
                update.tensor(self.state, j, _flat(p), _flat(grads[name]))
        return values.detach()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits (K, B, C) on its own batch x (K, B, ...) in training mode, its
        buffers left as they were (the loss after the last update)."""
        with self.program.mode(training=True):
            return self.program.train_logits(self.params, self.fixed, x)[0]

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = EVAL_CHUNK,
                 need: int | None = None, may_stop: torch.Tensor | None = None,
                 loss: str | None = None) -> tuple[torch.Tensor, ...]:
        """Correct answers of every member in eval mode on a shared set x (N, ...), y (N,),
        how many it evaluated (all N: no early exit), and whether all outputs were finite; with
        `loss` (a scan's evaluation) a fourth, each member's mean `loss_value` over the N, as
        `model.Ensemble.evaluate` gives them."""
        assert need is None, "an arbitrary module has no finiteness bound: no early exit"
        k, dev = self.size, x.device
        correct = torch.zeros(k, dtype=torch.long, device=dev)
        finite = torch.ones(k, dtype=torch.bool, device=dev)
        total = torch.zeros(k, dtype=next(iter(self.params.values())).dtype, device=dev)
        with self.program.mode(training=False):
            for i in range(0, len(x), chunk):
                out, _ = self.program.eval_logits(self.params, self.fixed, x[i:i + chunk])
                finite &= torch.isfinite(out).flatten(1).all(1)
                correct += (out.argmax(-1) == y[i:i + chunk]).sum(1)
                if loss is not None:
                    total += loss_value(out, y[i:i + chunk].expand(k, -1), loss) * out.shape[1]
        seen = torch.full((k,), len(x), dtype=torch.long, device=dev)
        return (correct, seen, finite) if loss is None else (correct, seen, finite,
                                                             total / max(len(x), 1))


class FuncTrainer(BatchedTrainer):
    """`BatchedTrainer` on a model of one's own (cfg.model): its network a `Stack` of the
    factory's modules, trained at one uniform rate per member, always fully evaluated, never on
    CUDA graphs. Implements `search.Trainer` as the built-in engine does, and with
    `full_budget` a scan's full-budget mode (`milr scan --model`)."""

    FUSED = False  # no layer structure: every optimizer through the per-tensor rule

    def __init__(self, cfg: EstimateConfig, data: Dataset, device: torch.device | None = None,
                 cancel_dominated: bool = False, dtype: torch.dtype = torch.float32,
                 eval_chunk: int = EVAL_CHUNK, factory: Factory | None = None,
                 full_budget: bool = False):
        if cfg.model is None:
            raise ValueError("FuncTrainer trains cfg.model: set model (PATH.py:NAME)")
        self.factory = factory or Factory.of(cfg, data)
        self.device, self.dtype = device or data.x_train.device, dtype
        self.modules: dict[int, nn.Module] = {}  # seed -> our copy of its module
        self.distinct = Distinct(self.factory, self.device, dtype)
        # every seed's now: one that is another's module is refused before any training
        first = [self._module(s) for s in range(cfg.seed, cfg.seed + cfg.seeds)][0]
        self.program = Program(first, input_shape(data), cfg.loss, cfg.model,
                               self.factory.loaded.path, cfg.batch_size, eval_chunk)
        self.tensors = len(self.program.trainable)
        self._rng: tuple | None = None  # the random state of dropout and the like, between rounds
        super().__init__(cfg, data, device, cancel_dominated, graphs=False,
                         retire_in_place=False, dtype=dtype, full_eval=True,
                         eval_chunk=self.program.eval_images, full_budget=full_budget)
        self.decay = [cfg.weight_decay] * self.tensors
        self._probe()

    def _module(self, seed: int) -> nn.Module:
        """Seed's module, built once (our own copy, on the device), told apart from every
        other seed's (`Distinct`)."""
        if seed not in self.modules:
            self.modules[seed] = self.distinct.module(seed)
        return self.modules[seed]

    def _members(self, seeds: list[int]) -> Stack:
        return Stack.of(self.program, [self._module(s) for s in seeds], self.optim.slots)

    def _rates(self, lr: torch.Tensor) -> Rates:
        return Rates.uniform(self.tensors, lr)

    def step_flops(self, members: int) -> float:
        """The FLOPs of one vmap call of a step (the module's forward, measured by `footprint`,
        and a backward of twice that per example), of `members` members or of a chunk's."""
        chunk = min(members, self.program.members_per_call or members)
        return chunk * 3.0 * self.batch * self.program.flops

    def _probe(self) -> None:
        """Run the module once as training and evaluation will (two examples, no update), so
        that what torch.func cannot run, or outputs of the wrong shape, are refused in one line
        before any search begins."""
        stack = self._members([self.cfg.seed])
        x, y = self.data.x_train[:2], self.data.y_train[:2]
        with self._own_rng():
            with self.program.mode(training=True):
                self.program.grads(stack.params, stack.fixed, x[None], y[None])
            with self.program.mode(training=False), torch.no_grad():
                out, _ = self.program.eval_logits(stack.params, stack.fixed, x)
        want = (1, len(x), self.data.classes)
        if tuple(out.shape) != want:
            raise ValueError(f"{MODEL} {self.cfg.model!r}: the module returns outputs of shape "
                             f"{tuple(out.shape[1:])} for {len(x)} inputs; expected "
                             f"{want[1:]} (one logit per class)")

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """The trainer's own random stream (first seeded from cfg.seed), the global one
        restored afterwards: random operations repeat with the search, whatever else runs."""
        cuda = self.device.type == "cuda"
        index = (self.device.index or torch.cuda.current_device()) if cuda else None
        with torch.random.fork_rng(devices=[index] if cuda else []):
            if self._rng is None:
                seed = member_seed(self.cfg.seed, RANDOMNESS)
                torch.default_generator.manual_seed(seed)
                if cuda:
                    torch.cuda.default_generators[index].manual_seed(seed)
            else:
                torch.set_rng_state(self._rng[0])
                if cuda:
                    torch.cuda.set_rng_state(self._rng[1], index)
            try:
                yield
            finally:
                self._rng = (torch.get_rng_state(),
                             torch.cuda.get_rng_state(index) if cuda else None)

    def advance(self):
        with self._own_rng():
            return super().advance()


def check_seeds(cfg, data: Dataset) -> None:
    """Every seed of cfg (a NetworkConfig with a model) built and told apart (`Distinct`), as
    a search's are, before a measurement that builds one seed at a time (λ1) begins."""
    distinct = Distinct(Factory.of(cfg, data), data.x_train.device, torch.float32)
    for s in range(cfg.seed, cfg.seed + cfg.seeds):
        distinct.module(s)


def member_loss(cfg, data: Dataset, seed: int, x: torch.Tensor, y: torch.Tensor,
                dtype: torch.dtype = torch.float32):
    """Seed's module at initialisation as a function of its trainable tensors (a list) on the
    batch x, y, in training mode, its buffers untouched: what `sharpness` differentiates twice
    (random operations draw once, when the gradient's graph is built). Returns (the tensors,
    requiring grad; the loss function)."""
    factory = Factory.of(cfg, data)
    module = factory.private(seed, x.device, dtype)
    program = Program(module, input_shape(data), cfg.loss, cfg.model, factory.loaded.path)
    named = dict(module.named_parameters())
    params = [named[n].detach().clone().requires_grad_() for n in program.trainable]
    fixed = {**{n: p.detach() for n, p in named.items() if n not in program.trainable},
             **{n: b.detach() for n, b in module.named_buffers()}}

    def loss(ps: list[torch.Tensor]) -> torch.Tensor:
        with program.mode(training=True):
            logits, _ = program._member_logits(dict(zip(program.trainable, ps, strict=True)),
                                               fixed, x)
        return loss_value(logits[None], y[None], cfg.loss)[0]

    return params, loss
