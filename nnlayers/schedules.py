"""Learning-rate schedules: torch's names, arguments and values on nnlayers
optimizers.

What: ``StepLR``, ``ExponentialLR``, ``CosineAnnealingLR`` and ``OneCycleLR``
(``torch.optim.lr_scheduler``'s, with torch's defaults), and
``LinearWarmup``, which is torch's ``SequentialLR`` of a ``LinearLR`` warm-up
and another schedule. A schedule sets hyperparameters of its optimizer, per
parameter group: ``"lr"``, and for ``OneCycleLR`` also ``"momentum"`` (SGD)
or ``"beta1"`` (Adam-like optimizers).

Why this shape: every value a schedule sets is a pure function of its
configuration, its base rates and the step count ``t`` (torch's closed
forms, ``_get_closed_form_lr``), computed by one method, ``_values(t)``.
So ``_peek(n)`` can give ``Model.fit`` the next ``n`` values in one array,
to run a per-step schedule inside its C epoch loop with no Python call per
batch, and they are bitwise the values ``n`` calls of ``step()`` set.
torch steps most schedules by recurrences on the optimizer's current rate
(``lr *= gamma``); those agree with the closed forms to rounding (the tests
compare with torch to 1e-12, relative). The closed forms also mean that a
schedule owns the rates it sets: a rate set by hand is replaced at the next
``step()``.

As in torch, building a schedule sets the value of step 0 (torch's
``last_epoch = -1`` then one step) and each ``step()`` moves one step on.

One difference from torch: where torch's value falls below 0
(``OneCycleLR``'s linear anneal on its last allowed step overshoots
``min_lr`` by a rounding error), a schedule sets 0, since optimizers
refuse a negative rate (torch's do too, when the rate is given by hand).
"""
import math
from numbers import Integral, Real

import numpy as np

from .optim import Optimizer

__all__ = ["Schedule", "StepLR", "ExponentialLR", "CosineAnnealingLR", "OneCycleLR",
           "LinearWarmup"]

INTERVALS = ("step", "epoch")


# ---------------------------------------------------------------------------
# argument checks: each names the argument, what it must be, and the value
# ---------------------------------------------------------------------------

def _checked_optimizer(optimizer, who):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{who}: optimizer must be an nnlayers optimizer, e.g. "
                        f"nnlayers.SGD(model, lr=...), got {type(optimizer).__name__}")
    return optimizer


def _checked_interval(interval):
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise ValueError(f"interval must be 'step' (a step() per batch) or 'epoch' "
                         f"(a step() per epoch), got {interval!r}")
    return interval


def _positive_int(name, value, meaning):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} ({meaning}) must be a positive int, got "
                        f"{type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} ({meaning}) must be a positive int, got {value}")
    return int(value)


def _number(name, value, low, strict, meaning):
    """value as a float, finite and > low (strict) or >= low."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} ({meaning}) must be a number, got "
                        f"{type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= low if strict else value < low):
        raise ValueError(f"{name} ({meaning}) must be a finite number "
                         f"{'>' if strict else '>='} {low:g}, got {value!r}")
    return value


def _per_group(name, value, n_groups, low, strict, meaning):
    """One float per parameter group from a number or a list of them."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_groups:
            raise ValueError(f"{name} must be a number or a list of {n_groups} (one per "
                             f"parameter group), got a list of {len(value)}")
        return [_number(f"{name}[{i}]", v, low, strict, meaning) for i, v in enumerate(value)]
    return [_number(name, value, low, strict, meaning)] * n_groups


def _as_given(value, per_group):
    """The checked floats of _per_group in the form given: a list or one."""
    return list(per_group) if isinstance(value, (list, tuple)) else per_group[0]


def _checked_count(n):
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise TypeError(f"n (the number of steps to look ahead) must be an int >= 0, got "
                        f"{type(n).__name__} {n!r}")
    if n < 0:
        raise ValueError(f"n (the number of steps to look ahead) must be an int >= 0, got {n}")
    return int(n)


def _group_lrs(optimizer):
    return [g["lr"] for g in optimizer.param_groups]


def _set_hyper(optimizer, names, rows):
    """Set names[k] of group g to rows[g][k], all or nothing."""
    before = optimizer.param_groups
    try:
        for g, row in enumerate(rows):
            for name, value in zip(names, row):
                optimizer.set_hyper(name, value, group=g)
    except Exception:
        for g, old in enumerate(before):
            for name in names:
                optimizer.set_hyper(name, old[name], group=g)
        raise


def _with_lr_floor(rows):
    """rows with every negative lr raised to 0 (optimizers refuse lr < 0)."""
    return tuple(row if row[0] >= 0 else (0.0,) + row[1:] for row in rows)


# ---------------------------------------------------------------------------
# the base class
# ---------------------------------------------------------------------------

class Schedule:
    """Base class of the schedules.

    A subclass lists its constructor arguments in ``_config_names``, checks
    them in ``_configure`` (returning the attributes to set), and computes
    in ``_at(t)`` the values of step ``t``: a tuple per parameter group of
    one float per name in ``names``. The base class does the rest: the
    step count, setting the optimizer, ``_peek``, ``state_dict``, ``repr``.

    Attributes: ``optimizer``; ``interval`` (``"step"``: call ``step()``
    after every batch, ``"epoch"``: after every epoch; ``Model.fit`` reads
    it); ``names``, the hyperparameters it sets; ``base_lrs``, torch's
    ``initial_lr`` per group; ``last_epoch``, the step whose values are set
    (0 after construction, as in torch).
    """

    names = ("lr",)
    _config_names = ()
    _state_keys = ("schedule", "config", "base_lrs", "last_epoch")
    _driven_by = None          # the LinearWarmup that steps this schedule

    def __init__(self, optimizer, interval, **config):
        who = type(self).__name__
        self.optimizer = _checked_optimizer(optimizer, who)
        self.interval = _checked_interval(interval)
        self.__dict__.update(self._configure(**config))
        self.base_lrs = self._initial_base_lrs()
        self.last_epoch = -1
        self._last_values = None
        self._move_to(0)

    # -- what a subclass defines ---------------------------------------------

    def _configure(self, **config):
        """The checked attributes for these constructor arguments."""
        return {}

    def _initial_base_lrs(self):
        """torch's initial_lr per group: the optimizer's rates by default."""
        return _group_lrs(self.optimizer)

    def _at(self, t):
        """The values of step t: a tuple (one float per name) per group."""
        raise NotImplementedError

    def _last_step(self):
        """The last step it may reach (None: no end)."""
        return None

    # -- values and stepping --------------------------------------------------

    def _values(self, t):
        """What step t sets: ``_at(t)`` with the lr floor. ``step()`` and
        ``_peek`` both take their values from here."""
        return _with_lr_floor(self._at(t))

    def _check_reach(self, t, call):
        end = self._last_step()
        if end is not None and t > end:
            raise ValueError(f"{type(self).__name__}: {call} would step to step {t}; the "
                             f"specified number of total steps is {end}, so the schedule "
                             f"has ended (torch raises here too): build it with a larger "
                             f"total_steps")

    def _move_to(self, t):
        """Set the values of step t in the optimizer, then record t."""
        values = self._values(t)
        _set_hyper(self.optimizer, self.names, values)
        self._record(t, values)

    def _record(self, t, values):
        self.last_epoch = t
        self._last_values = values

    def step(self):
        """Move one step on and set the optimizer's hyperparameters to its
        values. Call it after the optimizer's step: after every batch for
        ``interval == "step"``, after every epoch for ``"epoch"``."""
        if self._driven_by is not None:
            raise RuntimeError(f"this {type(self).__name__} is the after= of "
                               f"{self._driven_by}, which steps it: call that "
                               f"schedule's step() instead")
        self._check_reach(self.last_epoch + 1, "step()")
        self._move_to(self.last_epoch + 1)

    def _peek(self, n):
        """The values the next n ``step()`` calls would set, without changing
        the schedule or the optimizer: ``(names, values)`` with
        ``values.shape == (n, n_groups, len(names))`` (float64), bitwise what
        the steps set."""
        n = _checked_count(n)
        self._check_reach(self.last_epoch + n, f"_peek(n={n})")
        rows = [self._values(self.last_epoch + k) for k in range(1, n + 1)]
        shape = (n, len(self.base_lrs), len(self.names))
        return self.names, np.array(rows, dtype=np.float64).reshape(shape)

    @property
    def last_lr(self):
        """The rate per group set by the last step (a new list)."""
        return [row[0] for row in self._last_values]

    def get_last_lr(self):
        """The rate per group set by the last step (torch's name)."""
        return self.last_lr

    # -- configuration and state ------------------------------------------------

    def get_config(self):
        """The constructor arguments (JSON-able), interval included."""
        cfg = {name: getattr(self, name) for name in self._config_names}
        cfg["interval"] = self.interval
        return cfg

    def state_dict(self):
        """The schedule's state as a JSON-able dict: its class, its
        configuration, its base rates and its step."""
        return {"schedule": type(self).__name__, "config": self.get_config(),
                "base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict):
        """Take the state of ``state_dict()`` (of a schedule of the same
        class on an optimizer with as many groups) and set the optimizer's
        hyperparameters to the values of its step, so that stepping goes on
        as it would have. A bad dict changes nothing."""
        before = self.state_dict()
        self._restore(state_dict)
        try:
            self._check_reach(self.last_epoch, "load_state_dict")
            self._move_to(self.last_epoch)
        except Exception:
            self._restore(before)
            raise

    def _restore(self, state):
        """Check state, then take it (without touching the optimizer)."""
        self._take(self._checked_state(state))

    def _take(self, attrs):
        self.__dict__.update(attrs)
        self._record(self.last_epoch, self._values(self.last_epoch))

    def _checked_state(self, state):
        who = type(self).__name__
        if not isinstance(state, dict) or set(state) != set(self._state_keys):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state_dict must be a dict from {who}.state_dict(), with the "
                             f"keys {list(self._state_keys)}, got {got}")
        if state["schedule"] != who:
            raise ValueError(f"state_dict is the state of a {state['schedule']}, not of a {who}")
        config, bases = state["config"], state["base_lrs"]
        if not isinstance(config, dict) or set(config) != set(self._config_names) | {"interval"}:
            raise ValueError(f"state_dict's config must have the keys "
                             f"{sorted(set(self._config_names) | {'interval'})}, got "
                             f"{config!r}")
        if not isinstance(bases, list):
            raise ValueError(f"state_dict's base_lrs must be a list (a rate per group), got "
                             f"{bases!r}")
        attrs = {"interval": _checked_interval(config["interval"])}
        attrs.update(self._configure(**{k: v for k, v in config.items() if k != "interval"}))
        attrs["base_lrs"] = _per_group("state_dict's base_lrs", bases, len(self.base_lrs),
                                       0.0, True, "the base rates")
        t = state["last_epoch"]
        if isinstance(t, bool) or not isinstance(t, Integral) or t < 0:
            raise ValueError(f"state_dict's last_epoch must be an int >= 0, got {t!r}")
        attrs["last_epoch"] = int(t)
        return attrs

    def _repr_args(self):
        return self.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        lrs = ", ".join(f"{v:.6g}" for v in self.last_lr)
        return f"{type(self).__name__}({args}, last_epoch={self.last_epoch}, lr=[{lrs}])"


# ---------------------------------------------------------------------------
# the schedules
# ---------------------------------------------------------------------------

class StepLR(Schedule):
    """``StepLR(optimizer, step_size, gamma=0.1, interval="epoch")``: the
    rate falls by a factor ``gamma`` every ``step_size`` steps::

        lr(t) = base_lr · gamma ** (t // step_size)

    (``base_lr``: the group's lr when the schedule is built.) torch's
    ``StepLR``.
    """

    _config_names = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1, interval="epoch"):
        super().__init__(optimizer, interval, step_size=step_size, gamma=gamma)

    def _configure(self, step_size, gamma):
        return {"step_size": _positive_int("step_size", step_size, "steps between decays"),
                "gamma": _number("gamma", gamma, 0.0, True, "the factor of each decay")}

    def _at(self, t):
        return tuple((b * self.gamma ** (t // self.step_size),) for b in self.base_lrs)


class ExponentialLR(Schedule):
    """``ExponentialLR(optimizer, gamma, interval="epoch")``: the rate falls
    by a factor ``gamma`` every step::

        lr(t) = base_lr · gamma ** t

    torch's ``ExponentialLR``.
    """

    _config_names = ("gamma",)

    def __init__(self, optimizer, gamma, interval="epoch"):
        super().__init__(optimizer, interval, gamma=gamma)

    def _configure(self, gamma):
        return {"gamma": _number("gamma", gamma, 0.0, True, "the factor of each step")}

    def _at(self, t):
        return tuple((b * self.gamma ** t,) for b in self.base_lrs)


class CosineAnnealingLR(Schedule):
    """``CosineAnnealingLR(optimizer, T_max, eta_min=0, interval="epoch")``:
    half a cosine from ``base_lr`` down to ``eta_min`` over ``T_max``
    steps (then back up, periodically, as torch's)::

        lr(t) = eta_min + (base_lr − eta_min) · (1 + cos(π t / T_max)) / 2

    torch's ``CosineAnnealingLR`` (its closed form, without restarts). With
    ``eta_min=0`` the rate at ``T_max`` is 0, as in torch.
    """

    _config_names = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, interval="epoch"):
        super().__init__(optimizer, interval, T_max=T_max, eta_min=eta_min)

    def _configure(self, T_max, eta_min):
        return {"T_max": _positive_int("T_max", T_max, "steps from base_lr down to eta_min"),
                "eta_min": _number("eta_min", eta_min, 0.0, False, "the lowest rate")}

    def _at(self, t):
        cos_out = 1 + math.cos(math.pi * t / self.T_max)
        return tuple((self.eta_min + (b - self.eta_min) * cos_out / 2,) for b in self.base_lrs)


def _anneal_cos(start, end, pct):
    """Cosine from start (pct 0) to end (pct 1), torch's expression."""
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _anneal_linear(start, end, pct):
    """Straight line from start (pct 0) to end (pct 1), torch's expression."""
    return (end - start) * pct + start


_ANNEAL = {"cos": _anneal_cos, "linear": _anneal_linear}


def _one_cycle_phases(total_steps, pct_start, three_phase):
    """torch's phases: (end step, lr from, lr to, momentum from, momentum to)."""
    up = float(pct_start * total_steps) - 1
    if three_phase:
        return [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * pct_start * total_steps) - 2, "max_lr", "initial_lr",
                 "base_momentum", "max_momentum"),
                (total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
    return [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
            (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]


def _phase_of(phases, t):
    """(phase, pct) of step t: the first phase ending at or after t (the
    last one for any later t), and how far t is into it."""
    start = 0.0
    for i, phase in enumerate(phases):
        if t <= phase[0] or i == len(phases) - 1:
            return phase, (t - start) / (phase[0] - start)
        start = phase[0]


def _check_phase_lengths(phases, pct_start, total_steps):
    """A phase that a step lands in must not have length 0 (torch divides
    by it: ZeroDivisionError)."""
    starts = [0.0] + [p[0] for p in phases[:-1]]
    for i, (phase, start) in enumerate(zip(phases, starts)):
        if phase[0] == start and i in (0, len(phases) - 1):
            raise ValueError(f"pct_start={pct_start} with total_steps={total_steps} gives "
                             f"phase {i + 1} of the cycle no steps (it starts and ends at "
                             f"step {start:g}), and the schedule divides by its length: "
                             f"choose another pct_start or total_steps")


def _momentum_name(optimizer):
    """The hyperparameter OneCycleLR cycles: "beta1" if the groups have it
    (Adam-like), else "momentum" (SGD), as torch picks betas over momentum."""
    groups = optimizer.param_groups
    for name in ("beta1", "momentum"):
        if all(name in g for g in groups):
            return name
    raise ValueError(f"optimizer must support momentum or beta1 with cycle_momentum=True: "
                     f"the groups of {type(optimizer).__name__} have neither (they have "
                     f"{sorted(groups[0])}); pass cycle_momentum=False")


def _check_momentum_state(optimizer, name):
    """nnlayers' SGD allocates its velocity at construction, only with momentum."""
    if name == "momentum" and optimizer._state_view() is None:
        raise ValueError(f"cycle_momentum=True cycles the momentum, but this "
                         f"{type(optimizer).__name__} was built with momentum=0 and holds no "
                         f"velocity (it is allocated at construction): build it with a "
                         f"momentum > 0 (the schedule sets its value) or pass "
                         f"cycle_momentum=False")


class OneCycleLR(Schedule):
    """The 1cycle policy (Smith, *Super-Convergence*, 2017), torch's
    ``OneCycleLR`` with its defaults::

        OneCycleLR(optimizer, max_lr, total_steps, pct_start=0.3,
                   anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4,
                   three_phase=False, cycle_momentum=True, base_momentum=0.85,
                   max_momentum=0.95, interval="step")

    Per group, ``initial_lr = max_lr / div_factor`` and ``min_lr =
    initial_lr / final_div_factor`` (the optimizer's own lr is not used).
    The rate rises from ``initial_lr`` to ``max_lr`` until step
    ``pct_start·total_steps − 1``, then falls to ``min_lr`` at step
    ``total_steps − 1`` (with ``three_phase``: back to ``initial_lr`` at
    ``2·pct_start·total_steps − 2``, then to ``min_lr``). Within a phase
    from ``a`` to ``b`` at fraction ``p`` of it::

        cos:     b + (a − b) / 2 · (1 + cos(π p))
        linear:  a + (b − a) · p

    With ``cycle_momentum`` the momentum goes the other way, between
    ``max_momentum`` and ``base_momentum``: the ``"momentum"`` of SGD, or
    the ``"beta1"`` of an Adam-like optimizer (decided by the keys of its
    ``param_groups``, as torch decides by ``momentum`` or ``betas``; an
    optimizer with neither raises). ``max_lr``, ``base_momentum`` and
    ``max_momentum`` take a number or one per group. As in torch, ``step()``
    may be called ``total_steps`` times; one more raises ``ValueError``.
    """

    _config_names = ("max_lr", "total_steps", "pct_start", "anneal_strategy", "div_factor",
                     "final_div_factor", "three_phase", "cycle_momentum", "base_momentum",
                     "max_momentum")

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos",
                 div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 interval="step"):
        super().__init__(optimizer, interval, max_lr=max_lr, total_steps=total_steps,
                         pct_start=pct_start, anneal_strategy=anneal_strategy,
                         div_factor=div_factor, final_div_factor=final_div_factor,
                         three_phase=three_phase, cycle_momentum=cycle_momentum,
                         base_momentum=base_momentum, max_momentum=max_momentum)

    def _configure(self, max_lr, total_steps, pct_start, anneal_strategy, div_factor,
                   final_div_factor, three_phase, cycle_momentum, base_momentum,
                   max_momentum):
        n = self.optimizer._n_groups
        a = {"max_lrs": _per_group("max_lr", max_lr, n, 0.0, True, "the peak rate"),
             "total_steps": _positive_int("total_steps", total_steps, "steps in the cycle"),
             "pct_start": _number("pct_start", pct_start, 0.0, False,
                                  "the fraction of the cycle spent rising"),
             "div_factor": _number("div_factor", div_factor, 0.0, True,
                                   "initial_lr = max_lr / div_factor"),
             "final_div_factor": _number("final_div_factor", final_div_factor, 0.0, True,
                                         "min_lr = initial_lr / final_div_factor"),
             "three_phase": bool(three_phase), "cycle_momentum": bool(cycle_momentum)}
        if a["pct_start"] > 1:
            raise ValueError(f"pct_start (the fraction of the cycle spent rising) must be "
                             f"between 0 and 1, got {pct_start!r}")
        if anneal_strategy not in _ANNEAL:
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        a["anneal_strategy"] = anneal_strategy
        a["phases"] = _one_cycle_phases(a["total_steps"], a["pct_start"], a["three_phase"])
        _check_phase_lengths(a["phases"], a["pct_start"], a["total_steps"])
        a["base_momentums"] = _per_group("base_momentum", base_momentum, n, 0.0, False,
                                         "the momentum at max_lr")
        a["max_momentums"] = _per_group("max_momentum", max_momentum, n, 0.0, False,
                                        "the momentum at the ends of the cycle")
        a["max_lr"] = _as_given(max_lr, a["max_lrs"])
        a["base_momentum"] = _as_given(base_momentum, a["base_momentums"])
        a["max_momentum"] = _as_given(max_momentum, a["max_momentums"])
        a["names"] = ("lr",)
        if a["cycle_momentum"]:
            name = _momentum_name(self.optimizer)
            _check_momentum_state(self.optimizer, name)
            a["names"] = ("lr", name)
        return a

    def _initial_base_lrs(self):
        return [m / self.div_factor for m in self.max_lrs]

    def _levels(self, g):
        """Group g's rates and momenta by torch's names."""
        initial = self.base_lrs[g]
        return {"initial_lr": initial, "max_lr": self.max_lrs[g],
                "min_lr": initial / self.final_div_factor,
                "max_momentum": self.max_momentums[g], "base_momentum": self.base_momentums[g]}

    def _last_step(self):
        return self.total_steps

    def _at(self, t):
        phase, pct = _phase_of(self.phases, t)
        anneal = _ANNEAL[self.anneal_strategy]
        rows = []
        for g in range(len(self.base_lrs)):
            level = self._levels(g)
            row = (anneal(level[phase[1]], level[phase[2]], pct),)
            if self.cycle_momentum:
                row += (anneal(level[phase[3]], level[phase[4]], pct),)
            rows.append(row)
        return tuple(rows)


def _checked_after(after, optimizer, interval):
    """after, checked: a schedule on this optimizer, counting in interval,
    not already driven by another warm-up (or None)."""
    if after is None:
        return None
    if not isinstance(after, Schedule):
        raise TypeError(f"after must be an nnlayers schedule (e.g. "
                        f"nnlayers.schedules.CosineAnnealingLR(opt, T_max=...)) or None, "
                        f"got {type(after).__name__}")
    if after.optimizer is not optimizer:
        raise ValueError(f"after is built on another optimizer ({after.optimizer!r}); "
                         f"build it on the one given to LinearWarmup ({optimizer!r})")
    if after._driven_by is not None:
        raise ValueError(f"after is already the after= of {after._driven_by}; build a new "
                         f"schedule for this one")
    if after.interval != interval:
        raise ValueError(f"after counts in {after.interval}s (interval={after.interval!r}) "
                         f"but this LinearWarmup steps once per {interval}: build after "
                         f"with interval={interval!r}, or pass interval={after.interval!r} "
                         f"to LinearWarmup")
    return after


class LinearWarmup(Schedule):
    """``LinearWarmup(optimizer, steps, after=None, interval="step")``: a
    linear warm-up over ``steps`` steps, then ``after`` (another schedule
    built on the same optimizer), or the base rate held when ``after`` is
    None.

    It is exactly torch's ::

        SequentialLR(opt, [LinearLR(opt, start_factor=1/steps, end_factor=1.0,
                                    total_iters=steps), after], milestones=[steps])

    (or the ``LinearLR`` alone when ``after`` is None)::

        lr(t) = base_lr · (1/steps + (1 − 1/steps) · t / steps)   for t < steps
        lr(t) = after's lr(t − steps)                             for t >= steps
                (base_lr without after)

    ``base_lr`` is the rate ``after`` starts from (its ``base_lrs``:
    torch's ``initial_lr``, the optimizer's rate when ``after`` was built,
    or ``max_lr / div_factor`` for a ``OneCycleLR``), else the optimizer's
    rate now. Building ``after`` set its own step 0 on the optimizer;
    building the warm-up sets the warm-up's step 0 over it, so the order of
    construction does not matter (as in torch, whose ``SequentialLR`` undoes
    its schedules' construction steps). During the warm-up, the other
    hyperparameters ``after`` sets (OneCycleLR's momentum) hold its step-0
    values. ``after`` is stepped by the warm-up, counting in the warm-up's
    ``interval``, which must be ``after``'s: its own ``step()`` raises.
    """

    _config_names = ("steps",)
    _state_keys = Schedule._state_keys + ("after",)

    def __init__(self, optimizer, steps, after=None, interval="step"):
        _checked_optimizer(optimizer, "LinearWarmup")
        self.after = _checked_after(after, optimizer, _checked_interval(interval))
        super().__init__(optimizer, interval, steps=steps)
        if after is not None:
            after._driven_by = f"a LinearWarmup(steps={self.steps})"

    @property
    def names(self):
        return ("lr",) if self.after is None else self.after.names

    def _configure(self, steps):
        return {"steps": _positive_int("steps", steps, "the warm-up's length")}

    def _initial_base_lrs(self):
        if self.after is None:
            return _group_lrs(self.optimizer)
        return list(self.after.base_lrs)

    def _last_step(self):
        end = None if self.after is None else self.after._last_step()
        return None if end is None else self.steps + end

    def _at(self, t):
        if t >= self.steps:
            if self.after is None:
                return tuple((b,) for b in self.base_lrs)
            return self.after._at(t - self.steps)
        start = 1.0 / self.steps
        factor = start + (1.0 - start) * t / self.steps
        if self.after is None:
            return tuple((b * factor,) for b in self.base_lrs)
        held = self.after._at(0)
        return tuple((b * factor,) + row[1:] for b, row in zip(self.base_lrs, held))

    def _record(self, t, values):
        super()._record(t, values)
        if self.after is not None and t >= self.steps:
            self.after._record(t - self.steps, values)

    def _repr_args(self):
        return dict(super()._repr_args(), after=self.after)

    def state_dict(self):
        state = super().state_dict()
        state["after"] = None if self.after is None else self.after.state_dict()
        return state

    def _checked_state(self, state):
        attrs = super()._checked_state(state)
        after = state.get("after")
        if (after is None) != (self.after is None):
            raise ValueError(f"state_dict's after is {after!r} but this LinearWarmup's is "
                             f"{self.after!r}")
        if isinstance(after, dict) and isinstance(after.get("config"), dict) \
                and after["config"].get("interval") != attrs["interval"]:
            raise ValueError(f"state_dict's after counts in another interval than the "
                             f"warm-up's ({attrs['interval']!r})")
        return attrs

    def _restore(self, state):
        attrs = self._checked_state(state)
        if self.after is not None:
            self.after._restore(state["after"])
        self._take(attrs)
