"""Tests of nnlayers.schedules (learning-rate schedules, torch's names and
values).

Every schedule runs on an SGD with two parameter groups of different lr
(0.1 and 0.01) and momentum. Its values are checked step by step against a
closed-form NumPy computation written here (always), and against its torch
namesake (when torch is installed). ``_peek(n)`` must give bitwise what n
``step()`` calls set and change nothing; a state_dict must round-trip
through JSON and continue identically; bad arguments raise errors that name
them and leave the optimizer as it was.
"""
import json
import math
import warnings

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import schedules as S

BASE = np.array([0.1, 0.01])       # the two groups' lr
RTOL = 1e-12


def make_optimizer(momentum=0.9, nesterov=False, cls=nl.SGD):
    model = nl.Sequential(nl.Linear(3, 4, dtype=np.float64, seed=1), nl.Tanh(),
                          nl.Linear(4, 2, dtype=np.float64, seed=2))
    return cls([{"params": [model[0]], "lr": 0.1}, {"params": [model[2]], "lr": 0.01}],
               lr=0.1, momentum=momentum, nesterov=nesterov)


def hyper(opt, names):
    """(n_groups, len(names)) array of the optimizer's values now."""
    return np.array([[g[n] for n in names] for g in opt.param_groups])


def run(sched, n):
    """The values set at construction and by n steps: (n + 1, groups, names)."""
    out = [hyper(sched.optimizer, sched.names)]
    for _ in range(n):
        sched.step()
        out.append(hyper(sched.optimizer, sched.names))
    return np.array(out)


def floored(lr):
    """The documented mapping: a negative lr (refused by nnlayers'
    optimizers) is set as 0."""
    return np.maximum(lr, 0.0)


# ---------------------------------------------------------------------------
# closed forms in NumPy, t = 0, 1, ... (step 0 is set at construction)
# ---------------------------------------------------------------------------

def np_step(t, base, step_size, gamma):
    return base[None, :] * gamma ** (t // step_size)[:, None]


def np_exponential(t, base, gamma):
    return base[None, :] * gamma ** t[:, None]


def np_cosine(t, base, T_max, eta_min):
    c = (1 + np.cos(np.pi * t / T_max))[:, None]
    return floored(eta_min + (base[None, :] - eta_min) * c / 2)


def np_anneal(a, b, p, how):
    if how == "cos":
        return b + (a - b) * (1 + np.cos(np.pi * p)) / 2
    return a + (b - a) * p


def np_one_cycle(t, max_lr, total, pct=0.3, how="cos", div=25.0, final_div=1e4,
                 three_phase=False, m_lo=0.85, m_hi=0.95):
    """lr and momentum (t, groups, 2) of the 1cycle policy: phase ends at
    pct*total - 1, (2*pct*total - 2), total - 1; p the fraction into a phase."""
    max_lr = np.broadcast_to(np.asarray(max_lr, float), (2,))[None, :]
    lo = max_lr / div
    end = lo / final_div
    t = t[:, None].astype(float)
    e1, e2 = pct * total - 1, 2 * pct * total - 2
    if three_phase:
        e3 = total - 1
        lr = np.where(t <= e1, np_anneal(lo, max_lr, t / e1, how),
                      np.where(t <= e2, np_anneal(max_lr, lo, (t - e1) / (e2 - e1), how),
                               np_anneal(lo, end, (t - e2) / (e3 - e2), how)))
        m = np.where(t <= e1, np_anneal(m_hi, m_lo, t / e1, how),
                     np.where(t <= e2, np_anneal(m_lo, m_hi, (t - e1) / (e2 - e1), how),
                              m_hi + 0 * t))
    else:
        e2 = total - 1
        lr = np.where(t <= e1, np_anneal(lo, max_lr, t / e1, how),
                      np_anneal(max_lr, end, (t - e1) / (e2 - e1), how))
        m = np.where(t <= e1, np_anneal(m_hi, m_lo, t / e1, how),
                     np_anneal(m_lo, m_hi, (t - e1) / (e2 - e1), how))
    return np.stack([floored(lr), m + 0 * lr], axis=-1)


def np_warmup(t, base, steps):
    """torch's LinearLR(start_factor=1/steps, end_factor=1, total_iters=steps)."""
    factor = np.minimum(1 / steps + (1 - 1 / steps) * t / steps, 1.0)
    return base[None, :] * factor[:, None]


def np_warmup_then(t, steps, target, after):
    """The warm-up towards target, then after(t - steps)."""
    warm = np_warmup(t, target, steps)
    later = after(np.maximum(t - steps, 0))
    if later.ndim == 2:
        return np.where((t < steps)[:, None], warm, later)
    held = np.broadcast_to(later[0, :, 1:], later.shape[1:2] + (later.shape[2] - 1,))
    warm = np.concatenate([warm[..., None], np.broadcast_to(held, warm.shape + (1,))], -1)
    return np.where((t < steps)[:, None, None], warm, later)


# name -> (build ours, NumPy closed form of t (steps, groups[, names]), build torch's,
#          steps to run). Everything starts from the groups' lr BASE.
CASES = {
    "StepLR": (lambda o: S.StepLR(o, step_size=4, gamma=0.5),
               lambda t: np_step(t, BASE, 4, 0.5),
               lambda T, o: T.StepLR(o, step_size=4, gamma=0.5), 30),
    "ExponentialLR": (lambda o: S.ExponentialLR(o, gamma=0.9),
                      lambda t: np_exponential(t, BASE, 0.9),
                      lambda T, o: T.ExponentialLR(o, gamma=0.9), 40),
    "CosineAnnealingLR": (lambda o: S.CosineAnnealingLR(o, T_max=20),
                          lambda t: np_cosine(t, BASE, 20, 0.0),
                          lambda T, o: T.CosineAnnealingLR(o, T_max=20), 45),
    "CosineAnnealingLR_eta_min": (
        lambda o: S.CosineAnnealingLR(o, T_max=13, eta_min=1e-3),
        lambda t: np_cosine(t, BASE, 13, 1e-3),
        lambda T, o: T.CosineAnnealingLR(o, T_max=13, eta_min=1e-3), 40),
    "OneCycleLR": (lambda o: S.OneCycleLR(o, max_lr=[1.0, 0.3], total_steps=40),
                   lambda t: np_one_cycle(t, [1.0, 0.3], 40),
                   lambda T, o: T.OneCycleLR(o, max_lr=[1.0, 0.3], total_steps=40), 40),
    "OneCycleLR_linear_three_phase": (
        lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=37, pct_start=0.25,
                               anneal_strategy="linear", three_phase=True, div_factor=10.0,
                               final_div_factor=100.0, base_momentum=0.8, max_momentum=0.9),
        lambda t: np_one_cycle(t, 0.5, 37, pct=0.25, how="linear", three_phase=True,
                               div=10.0, final_div=100.0, m_lo=0.8, m_hi=0.9),
        lambda T, o: T.OneCycleLR(o, max_lr=0.5, total_steps=37, pct_start=0.25,
                                  anneal_strategy="linear", three_phase=True, div_factor=10.0,
                                  final_div_factor=100.0, base_momentum=0.8,
                                  max_momentum=0.9), 37),
    "OneCycleLR_linear": (
        lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=33, anneal_strategy="linear"),
        lambda t: np_one_cycle(t, 0.5, 33, how="linear"),
        lambda T, o: T.OneCycleLR(o, max_lr=0.5, total_steps=33, anneal_strategy="linear"),
        33),
    "LinearWarmup": (lambda o: S.LinearWarmup(o, steps=6),
                     lambda t: np_warmup(t, BASE, 6),
                     lambda T, o: T.LinearLR(o, start_factor=1 / 6, end_factor=1.0,
                                             total_iters=6), 30),
    "LinearWarmup_cosine": (
        lambda o: S.LinearWarmup(o, steps=5, after=S.CosineAnnealingLR(o, T_max=20,
                                                                       interval="step")),
        lambda t: np_warmup_then(t, 5, BASE, lambda u: np_cosine(u, BASE, 20, 0.0)),
        lambda T, o: T.SequentialLR(o, [T.LinearLR(o, 1 / 5, 1.0, 5),
                                        T.CosineAnnealingLR(o, T_max=20)], milestones=[5]),
        35),
    "LinearWarmup_step": (
        lambda o: S.LinearWarmup(o, steps=4, after=S.StepLR(o, 3, gamma=0.5),
                                 interval="epoch"),
        lambda t: np_warmup_then(t, 4, BASE, lambda u: np_step(u, BASE, 3, 0.5)),
        lambda T, o: T.SequentialLR(o, [T.LinearLR(o, 1 / 4, 1.0, 4),
                                        T.StepLR(o, 3, gamma=0.5)], milestones=[4]), 30),
    "LinearWarmup_one_cycle": (
        lambda o: S.LinearWarmup(o, steps=5, after=S.OneCycleLR(o, max_lr=1.0,
                                                                total_steps=30)),
        lambda t: np_warmup_then(t, 5, np.array([0.04, 0.04]),
                                 lambda u: np_one_cycle(u, 1.0, 30)),
        lambda T, o: T.SequentialLR(o, [T.LinearLR(o, 1 / 5, 1.0, 5),
                                        T.OneCycleLR(o, max_lr=1.0, total_steps=30)],
                                    milestones=[5]), 35),
}


def as_3d(values):
    return values[..., None] if values.ndim == 2 else values


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_match_closed_form(case):
    build, closed_form, _, n = CASES[case]
    opt = make_optimizer()
    sched = build(opt)
    expected = as_3d(closed_form(np.arange(n + 1)))
    got = [hyper(opt, sched.names)]
    assert sched.get_last_lr() == sched.last_lr == [g["lr"] for g in opt.param_groups]
    for _ in range(n):
        sched.step()
        got.append(hyper(opt, sched.names))
        # the optimizer's lr reads the current rate; get_last_lr and last_lr too
        assert opt.lr == sched.last_lr[0] == sched.get_last_lr()[0]
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    assert sched.last_epoch == n
    np.testing.assert_allclose(np.array(got), expected, rtol=RTOL, atol=0)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def torch_sgd(torch):
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    return torch.optim.SGD([{"params": a.parameters(), "lr": 0.1},
                            {"params": b.parameters(), "lr": 0.01}], lr=0.1, momentum=0.9)


def torch_values(sched, names, n):
    """torch's lr (and momentum/beta1) at construction and after n steps."""
    def now():
        out = []
        for g in sched.optimizer.param_groups:
            row = [g["lr"]]
            if "momentum" in names:
                row.append(g["momentum"])
            if "beta1" in names:
                row.append(g["betas"][0])
            out.append(row)
        return out
    values = [now()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # "lr_scheduler.step() before optimizer.step()"
        for _ in range(n):
            sched.step()
            values.append(now())
    return np.array(values, dtype=float)


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_match_torch(case, torch):
    build, _, build_torch, n = CASES[case]
    assert n >= 30
    ours = build(make_optimizer())
    theirs = build_torch(torch.optim.lr_scheduler, torch_sgd(torch))
    expected = torch_values(theirs, ours.names, n)
    expected[..., 0] = floored(expected[..., 0])
    np.testing.assert_allclose(run(ours, n), expected, rtol=RTOL, atol=0)


class BetaSGD(nl.SGD):
    """An SGD that shows its momentum as "beta1", with a "beta2" beside it,
    as an Adam-like optimizer's groups do: OneCycleLR must cycle "beta1"."""

    @property
    def param_groups(self):
        return [{"beta1" if k == "momentum" else k: v for k, v in g.items()} | {"beta2": 0.999}
                for g in super().param_groups]

    def set_hyper(self, name, value, group=None):
        super().set_hyper("momentum" if name == "beta1" else name, value, group)


def test_one_cycle_cycles_beta1_like_torch_adam(torch):
    opt = make_optimizer(cls=BetaSGD)
    ours = S.OneCycleLR(opt, max_lr=[0.5, 0.2], total_steps=30, base_momentum=0.8)
    assert ours.names == ("lr", "beta1")
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    adam = torch.optim.Adam([{"params": a.parameters(), "lr": 0.1},
                             {"params": b.parameters(), "lr": 0.01}], betas=(0.9, 0.999))
    theirs = torch.optim.lr_scheduler.OneCycleLR(adam, max_lr=[0.5, 0.2], total_steps=30,
                                                 base_momentum=0.8)
    np.testing.assert_allclose(run(ours, 30), torch_values(theirs, ours.names, 30),
                               rtol=RTOL, atol=0)
    assert opt._group(0)["momentum"] == opt.param_groups[0]["beta1"]   # it reached the optimizer


class MomentumAndBetaSGD(BetaSGD):
    """Groups with both "momentum" and "beta1": torch picks betas then."""

    @property
    def param_groups(self):
        return [dict(g, momentum=g["beta1"]) for g in super().param_groups]


def test_one_cycle_prefers_beta1_over_momentum():
    sched = S.OneCycleLR(make_optimizer(cls=MomentumAndBetaSGD), max_lr=1.0, total_steps=10)
    assert sched.names == ("lr", "beta1")
    assert S.OneCycleLR(make_optimizer(), max_lr=1.0, total_steps=10).names == ("lr", "momentum")


def test_one_cycle_beta1_matches_closed_form():
    opt = make_optimizer(cls=BetaSGD)
    sched = S.OneCycleLR(opt, max_lr=[1.0, 0.3], total_steps=40)
    assert sched.names == ("lr", "beta1")
    np.testing.assert_allclose(run(sched, 40), np_one_cycle(np.arange(41), [1.0, 0.3], 40),
                               rtol=RTOL, atol=0)


# ---------------------------------------------------------------------------
# _peek(n): bitwise what n steps set, and nothing changes
# ---------------------------------------------------------------------------

def observe(sched):
    """Everything a _peek must leave alone."""
    return (json.dumps(sched.state_dict()), sched.optimizer.param_groups, sched.last_lr,
            sched.last_epoch, repr(sched))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("first", [0, 3, 11])
def test_peek_equals_stepping(case, first):
    build, _, _, n = CASES[case]
    sched = build(make_optimizer())
    for _ in range(first):
        sched.step()
    k = n - first
    before = observe(sched)
    names, peeked = sched._peek(k)
    assert observe(sched) == before, "_peek changed the schedule or the optimizer"
    assert names == sched.names and isinstance(names, tuple)
    assert peeked.shape == (k, 2, len(names)) and peeked.dtype == np.float64
    names2, again = sched._peek(k)
    assert names2 == names and np.array_equal(again, peeked)
    stepped = run(sched, k)[1:]
    assert np.array_equal(stepped, peeked), "_peek(n) differs from n step() calls"
    assert sched._peek(0)[1].shape == (0, 2, len(names))


def test_peek_windows_agree_with_one_long_peek():
    sched = CASES["LinearWarmup_one_cycle"][0](make_optimizer())
    whole = sched._peek(35)[1]
    parts = []
    for k in (4, 1, 7, 23):        # as fit would: peek an epoch, then step through it
        parts.append(sched._peek(k)[1])
        for _ in range(k):
            sched.step()
    assert np.array_equal(np.concatenate(parts), whole)


# ---------------------------------------------------------------------------
# state_dict
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trip(case):
    build, _, _, n = CASES[case]
    sched = build(make_optimizer())
    for _ in range(7):
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))
    assert state == sched.state_dict()
    twin = build(make_optimizer())           # a fresh copy, as after loading a model
    twin.optimizer.lr = 0.5                  # whatever the new optimizer holds
    twin.load_state_dict(state)
    assert twin.last_epoch == sched.last_epoch and twin.last_lr == sched.last_lr
    assert twin.optimizer.param_groups == sched.optimizer.param_groups
    assert twin.state_dict() == sched.state_dict()
    assert np.array_equal(run(twin, n - 7), run(sched, n - 7))


def test_state_dict_carries_the_configuration():
    sched = S.CosineAnnealingLR(make_optimizer(), T_max=9, eta_min=1e-3)
    sched.step()
    other = S.CosineAnnealingLR(make_optimizer(), T_max=50)
    other.load_state_dict(sched.state_dict())
    assert (other.T_max, other.eta_min) == (9, 1e-3)
    assert np.array_equal(run(other, 12), run(sched, 12))


def test_linear_warmup_drives_after():
    opt = make_optimizer()
    after = S.CosineAnnealingLR(opt, T_max=10, interval="step")
    warm = S.LinearWarmup(opt, steps=3, after=after)
    assert warm.base_lrs == after.base_lrs == list(BASE)
    for _ in range(5):
        warm.step()
    assert after.last_epoch == 2 and after.last_lr == warm.last_lr
    np.testing.assert_allclose(after.last_lr, np_cosine(np.array([2]), BASE, 10, 0.0)[0],
                               rtol=RTOL)


# ---------------------------------------------------------------------------
# construction, interval, repr, docs, the lr floor
# ---------------------------------------------------------------------------

def test_construction_sets_step_zero_and_after_does_not_disturb_the_warmup():
    opt = make_optimizer()
    S.StepLR(opt, step_size=2)
    assert [g["lr"] for g in opt.param_groups] == list(BASE)
    one = S.OneCycleLR(opt, max_lr=2.0, total_steps=10)
    assert one.last_lr == pytest.approx([0.08, 0.08], rel=1e-14) and one.last_epoch == 0
    assert [g["momentum"] for g in opt.param_groups] == pytest.approx([0.95, 0.95], rel=1e-14)
    opt2 = make_optimizer()
    cos = S.CosineAnnealingLR(opt2, T_max=10, interval="step")
    cos_state = cos.state_dict()
    warm = S.LinearWarmup(opt2, steps=4, after=cos)
    np.testing.assert_allclose(warm.last_lr, BASE / 4, rtol=RTOL)
    assert cos.state_dict() == cos_state


@pytest.mark.parametrize("cls, args, default", [
    (S.StepLR, (3,), "epoch"), (S.ExponentialLR, (0.9,), "epoch"),
    (S.CosineAnnealingLR, (10,), "epoch"), (S.OneCycleLR, (1.0, 10), "step"),
    (S.LinearWarmup, (3,), "step")])
def test_interval_default_and_override(cls, args, default):
    assert cls(make_optimizer(), *args).interval == default
    other = {"step": "epoch", "epoch": "step"}[default]
    sched = cls(make_optimizer(), *args, interval=other)
    assert sched.interval == other and sched.state_dict()["config"]["interval"] == other


def test_repr_and_docstrings():
    opt = make_optimizer()
    cos = S.CosineAnnealingLR(opt, T_max=20, interval="step")
    warm = S.LinearWarmup(opt, steps=5, after=cos)
    warm.step()
    text = repr(warm)
    assert text.startswith("LinearWarmup(steps=5, interval='step', after=CosineAnnealingLR(")
    assert "T_max=20" in text and "last_epoch=1" in text and "lr=[0.036, 0.0036]" in text
    assert repr(S.StepLR(make_optimizer(), 3)) == (
        "StepLR(step_size=3, gamma=0.1, interval='epoch', last_epoch=0, lr=[0.1, 0.01])")
    formulas = {S.StepLR: "gamma ** (t // step_size)", S.ExponentialLR: "gamma ** t",
                S.CosineAnnealingLR: "cos(π t / T_max)", S.OneCycleLR: "cos(π p)",
                S.LinearWarmup: "SequentialLR"}
    for cls, formula in formulas.items():
        assert formula in cls.__doc__, cls
    assert "_peek" in S.__doc__ and "sets 0" in S.__doc__


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lr_zero_updates_nothing(dtype):
    """Where torch's lr is 0 (cosine annealing to eta_min=0) the schedule
    sets 0, and a step then changes no parameter."""
    model = nl.Sequential(nl.Linear(3, 4, dtype=dtype, seed=1), nl.Tanh(),
                          nl.Linear(4, 2, dtype=dtype, seed=2))
    opt = nl.SGD(model, lr=0.1)
    sched = S.CosineAnnealingLR(opt, T_max=2)
    sched.step()
    sched.step()
    assert opt.lr == 0.0 and sched.last_lr == [0.0]
    before = {k: v.copy() for k, v in model.parameters().items()}
    x = np.random.default_rng(0).standard_normal((8, 3))
    model.train_step(x, np.arange(8) % 2, nl.SoftmaxCrossEntropy(), opt)
    for k, v in model.parameters().items():
        assert np.array_equal(v, before[k]), k
    sched.step()                                   # and up again, as torch's
    assert opt.lr == pytest.approx(0.1 * (1 + math.cos(math.pi * 3 / 2)) / 2, rel=1e-15)


# ---------------------------------------------------------------------------
# errors: a clear message naming the argument; the optimizer unchanged
# ---------------------------------------------------------------------------

def assert_unchanged(opt, groups):
    assert opt.param_groups == groups


BAD_ARGUMENTS = [
    (S.StepLR, dict(step_size=0), ValueError, r"step_size \(steps between decays\) must be a "
                                              r"positive int, got 0"),
    (S.StepLR, dict(step_size=2.5), TypeError, r"step_size .* must be a positive int, got "
                                               r"float 2\.5"),
    (S.StepLR, dict(step_size=True), TypeError, r"step_size .* positive int, got bool"),
    (S.StepLR, dict(step_size=3, gamma=0), ValueError, r"gamma \(the factor of each decay\) "
                                                       r"must be a finite number > 0, got 0\.0"),
    (S.ExponentialLR, dict(gamma=-0.5), ValueError, r"gamma .* finite number > 0, got -0\.5"),
    (S.ExponentialLR, dict(gamma=float("nan")), ValueError, r"gamma .* finite number > 0, "
                                                            r"got nan"),
    (S.ExponentialLR, dict(gamma="0.9"), TypeError, r"gamma .* must be a number, got str"),
    (S.CosineAnnealingLR, dict(T_max=0), ValueError, r"T_max .* must be a positive int, got 0"),
    (S.CosineAnnealingLR, dict(T_max=10.0), TypeError, r"T_max .* positive int, got float"),
    (S.CosineAnnealingLR, dict(T_max=10, eta_min=-1e-3), ValueError,
     r"eta_min \(the lowest rate\) must be a finite number >= 0, got -0\.001"),
    (S.OneCycleLR, dict(max_lr=1.0, total_steps=0), ValueError,
     r"total_steps \(steps in the cycle\) must be a positive int, got 0"),
    (S.OneCycleLR, dict(max_lr=1.0, total_steps=None), TypeError,
     r"total_steps .* positive int, got NoneType"),
    (S.OneCycleLR, dict(max_lr=[1.0, 0.5, 0.1], total_steps=10), ValueError,
     r"max_lr must be a number or a list of 2 \(one per parameter group\), got a list of 3"),
    (S.OneCycleLR, dict(max_lr=[1.0, 0.0], total_steps=10), ValueError,
     r"max_lr\[1\] \(the peak rate\) must be a finite number > 0, got 0\.0"),
    (S.OneCycleLR, dict(max_lr=1.0, total_steps=10, pct_start=1.5), ValueError,
     r"pct_start .* must be between 0 and 1, got 1\.5"),
    (S.OneCycleLR, dict(max_lr=1.0, total_steps=10, anneal_strategy="exp"), ValueError,
     r"anneal_strategy must be 'cos' or 'linear', got 'exp'"),
    (S.OneCycleLR, dict(max_lr=1.0, total_steps=10, pct_start=0.1), ValueError,
     r"pct_start=0\.1 with total_steps=10 gives phase 1 of the cycle no steps"),
    (S.OneCycleLR, dict(max_lr=1.0, total_steps=10, pct_start=1.0), ValueError,
     r"pct_start=1\.0 with total_steps=10 gives phase 2 of the cycle no steps"),
    (S.OneCycleLR, dict(max_lr=1.0, total_steps=10, div_factor=0), ValueError,
     r"div_factor \(initial_lr = max_lr / div_factor\) must be a finite number > 0"),
    (S.OneCycleLR, dict(max_lr=1.0, total_steps=10, max_momentum=-0.1), ValueError,
     r"max_momentum .* finite number >= 0, got -0\.1"),
    (S.LinearWarmup, dict(steps=0), ValueError, r"steps \(the warm-up's length\) must be a "
                                                r"positive int, got 0"),
    (S.StepLR, dict(step_size=3, interval="batch"), ValueError,
     r"interval must be 'step' \(a step\(\) per batch\) or 'epoch' \(a step\(\) per epoch\), "
     r"got 'batch'"),
    (S.LinearWarmup, dict(steps=3, interval=None), ValueError, r"interval must be .*got None"),
]


@pytest.mark.parametrize("cls, kwargs, exc, message", BAD_ARGUMENTS)
def test_err_schedule_bad_argument(cls, kwargs, exc, message):
    opt = make_optimizer()
    groups = opt.param_groups
    with pytest.raises(exc, match=message):
        cls(opt, **kwargs)
    assert_unchanged(opt, groups)
    S.StepLR(opt, 2).step()            # the optimizer still takes a schedule


@pytest.mark.parametrize("cls, args", [(S.StepLR, (3,)), (S.OneCycleLR, (1.0, 10)),
                                       (S.LinearWarmup, (3,))])
@pytest.mark.parametrize("what", ["torch", "model", "none"])
def test_err_schedule_not_an_optimizer(cls, args, what):
    if what == "torch":
        torch = pytest.importorskip("torch")
        opt = torch_sgd(torch)
    else:
        opt = {"model": make_optimizer().layers, "none": None}[what]
    with pytest.raises(TypeError, match=rf"{cls.__name__}: optimizer must be an nnlayers "
                                        rf"optimizer, e\.g\. nnlayers\.SGD\(model, lr=\.\.\.\), "
                                        rf"got {type(opt).__name__}"):
        cls(opt, *args)


def test_err_after_on_another_optimizer():
    opt, other = make_optimizer(), make_optimizer()
    after = S.CosineAnnealingLR(other, T_max=10, interval="step")
    groups, other_groups = opt.param_groups, other.param_groups
    with pytest.raises(ValueError, match=r"after is built on another optimizer .*; build it on "
                                         r"the one given to LinearWarmup"):
        S.LinearWarmup(opt, steps=3, after=after)
    assert_unchanged(opt, groups)
    assert_unchanged(other, other_groups)
    after.step()                               # after is still free to use alone
    S.LinearWarmup(other, steps=3, after=S.CosineAnnealingLR(other, 10, interval="step"))


def test_err_after_bad():
    opt = make_optimizer()
    groups = opt.param_groups
    with pytest.raises(TypeError, match=r"after must be an nnlayers schedule .* or None, got "
                                        r"SGD"):
        S.LinearWarmup(opt, 3, after=opt)
    after = S.CosineAnnealingLR(opt, T_max=10)          # counts epochs
    with pytest.raises(ValueError, match=r"after counts in epochs \(interval='epoch'\) but this "
                                         r"LinearWarmup steps once per step: build after with "
                                         r"interval='step', or pass interval='epoch'"):
        S.LinearWarmup(opt, 3, after=after)
    assert_unchanged(opt, groups)
    S.LinearWarmup(opt, 3, after=after, interval="epoch")
    with pytest.raises(ValueError, match=r"after is already the after= of a "
                                         r"LinearWarmup\(steps=3\)"):
        S.LinearWarmup(opt, 2, after=after, interval="epoch")


def test_err_after_stepped_directly():
    opt = make_optimizer()
    after = S.ExponentialLR(opt, 0.5, interval="step")
    warm = S.LinearWarmup(opt, 2, after=after)
    groups, state = opt.param_groups, warm.state_dict()
    with pytest.raises(RuntimeError, match=r"this ExponentialLR is the after= of a "
                                           r"LinearWarmup\(steps=2\), which steps it: call that "
                                           r"schedule's step\(\) instead"):
        after.step()
    assert_unchanged(opt, groups)
    assert warm.state_dict() == state


@pytest.mark.parametrize("how", ["one_cycle", "warmup"])
def test_err_one_cycle_past_total_steps(how):
    opt = make_optimizer()
    if how == "one_cycle":
        sched, who, end = S.OneCycleLR(opt, max_lr=1.0, total_steps=12), "OneCycleLR", 12
    else:
        sched = S.LinearWarmup(opt, 3, after=S.OneCycleLR(opt, max_lr=1.0, total_steps=12))
        who, end = "LinearWarmup", 15
    for _ in range(end):                       # as in torch: total_steps steps after building
        sched.step()
    groups, state = opt.param_groups, sched.state_dict()
    with pytest.raises(ValueError, match=rf"{who}: step\(\) would step to step {end + 1}; the "
                                         rf"specified number of total steps is {end}, so the "
                                         rf"schedule has ended"):
        sched.step()
    with pytest.raises(ValueError, match=rf"{who}: _peek\(n=2\) would step to step {end + 2}"):
        sched._peek(2)
    assert_unchanged(opt, groups)
    assert sched.state_dict() == state
    assert sched._peek(0)[1].shape == (0, 2, 2)


def test_err_one_cycle_past_total_steps_in_peek():
    sched = S.OneCycleLR(make_optimizer(), max_lr=1.0, total_steps=12)
    groups = sched.optimizer.param_groups
    with pytest.raises(ValueError, match=r"_peek\(n=13\) would step to step 13; the specified "
                                         r"number of total steps is 12"):
        sched._peek(13)
    assert_unchanged(sched.optimizer, groups)
    assert sched._peek(12)[1].shape == (12, 2, 2)


class NoMomentumSGD(nl.SGD):
    """An optimizer whose groups have neither "momentum" nor "beta1"."""

    @property
    def param_groups(self):
        return [{k: v for k, v in g.items() if k != "momentum"} for g in super().param_groups]


def test_err_cycle_momentum_without_momentum():
    opt = make_optimizer(cls=NoMomentumSGD)
    groups = opt.param_groups
    with pytest.raises(ValueError, match=r"optimizer must support momentum or beta1 with "
                                         r"cycle_momentum=True: the groups of NoMomentumSGD "
                                         r"have neither .*; pass cycle_momentum=False"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    assert_unchanged(opt, groups)
    plain = make_optimizer(momentum=0.0)      # nnlayers' SGD: no velocity without momentum
    groups = plain.param_groups
    with pytest.raises(ValueError, match=r"cycle_momentum=True cycles the momentum, but this SGD "
                                         r"was built with momentum=0 and holds no velocity .*: "
                                         r"build it with a momentum > 0 .* or pass "
                                         r"cycle_momentum=False"):
        S.OneCycleLR(plain, max_lr=1.0, total_steps=10)
    assert_unchanged(plain, groups)
    sched = S.OneCycleLR(plain, max_lr=1.0, total_steps=10, cycle_momentum=False)
    assert sched.names == ("lr",) and plain.param_groups[0]["momentum"] == 0.0


def test_err_refused_value_changes_nothing():
    """A value the optimizer refuses (momentum 0 with nesterov) fails the
    whole step: no group keeps a new value, the schedule stays put."""
    opt = make_optimizer(nesterov=True)
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=10, base_momentum=0.0,
                         anneal_strategy="linear")
    sched.step()                                  # momentum 0.475 at step 1
    groups, state = opt.param_groups, sched.state_dict()
    with pytest.raises(ValueError, match=r"nesterov=True needs momentum > 0"):
        sched.step()                              # step 2 is the peak: momentum 0
    assert_unchanged(opt, groups)
    assert sched.state_dict() == state and sched.last_epoch == 1


@pytest.mark.parametrize("n, exc, message", [
    (-1, ValueError, r"n \(the number of steps to look ahead\) must be an int >= 0, got -1"),
    (2.0, TypeError, r"n \(the number of steps to look ahead\) must be an int >= 0, got "
                     r"float 2\.0"),
    (None, TypeError, r"n .* got NoneType None")])
def test_err_peek_bad_n(n, exc, message):
    sched = S.ExponentialLR(make_optimizer(), 0.9)
    before = observe(sched)
    with pytest.raises(exc, match=message):
        sched._peek(n)
    assert observe(sched) == before


def _bad_states():
    good = S.CosineAnnealingLR(make_optimizer(), T_max=10).state_dict()
    return {
        "not_a_dict": ([1, 2], r"state_dict must be a dict from "
                               r"CosineAnnealingLR\.state_dict\(\), with the keys \['schedule', "
                               r"'config', 'base_lrs', 'last_epoch'\], got list"),
        "missing_key": ({k: v for k, v in good.items() if k != "base_lrs"},
                        r"with the keys .*got \['config', 'last_epoch', 'schedule'\]"),
        "other_class": (dict(good, schedule="StepLR"),
                        r"state_dict is the state of a StepLR, not of a CosineAnnealingLR"),
        "groups": (dict(good, base_lrs=[0.1]),
                   r"state_dict's base_lrs must be a number or a list of 2 \(one per parameter "
                   r"group\), got a list of 1"),
        "bad_config": (dict(good, config=dict(good["config"], T_max=-3)),
                       r"T_max .* must be a positive int, got -3"),
        "config_keys": (dict(good, config={"T_max": 3}),
                        r"state_dict's config must have the keys \['T_max', 'eta_min', "
                        r"'interval'\]"),
        "last_epoch": (dict(good, last_epoch=-2),
                       r"state_dict's last_epoch must be an int >= 0, got -2"),
    }


@pytest.mark.parametrize("kind", sorted(_bad_states()))
def test_err_load_state_dict_bad(kind):
    state, message = _bad_states()[kind]
    sched = S.CosineAnnealingLR(make_optimizer(), T_max=20)
    sched.step()
    before = observe(sched)
    with pytest.raises(ValueError, match=message):
        sched.load_state_dict(state)
    assert observe(sched) == before


def test_err_load_state_dict_past_the_end():
    sched = S.OneCycleLR(make_optimizer(), max_lr=1.0, total_steps=10)
    state = dict(sched.state_dict(), last_epoch=11)
    before = observe(sched)
    with pytest.raises(ValueError, match=r"OneCycleLR: load_state_dict would step to step 11; "
                                         r"the specified number of total steps is 10"):
        sched.load_state_dict(state)
    assert observe(sched) == before
    warm = S.LinearWarmup(make_optimizer(), 3)
    before = observe(warm)
    with pytest.raises(ValueError, match=r"state_dict's after is \{.*\} but this LinearWarmup's "
                                         r"is None"):
        warm.load_state_dict(dict(warm.state_dict(), after=sched.state_dict()))
    assert observe(warm) == before
    opt = make_optimizer()
    warm = S.LinearWarmup(opt, 3, after=S.ExponentialLR(opt, 0.5, interval="step"))
    before = observe(warm)
    with pytest.raises(ValueError, match=r"state_dict must be a dict from "
                                         r"ExponentialLR\.state_dict\(\)"):
        warm.load_state_dict(dict(warm.state_dict(), after="x"))
    state = warm.state_dict()
    state["after"]["config"]["interval"] = "epoch"
    with pytest.raises(ValueError, match=r"state_dict's after counts in another interval than "
                                         r"the warm-up's \('step'\)"):
        warm.load_state_dict(state)
    assert observe(warm) == before
