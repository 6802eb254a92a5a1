"""Finite-difference gradient checking for layers, models and losses.

:func:`gradcheck` compares the analytic gradients an object computes in its
``backward`` with central finite differences of its ``forward``. It works by
duck typing on three kinds of object:

* a **loss** (when ``target`` is given): ``value = f.forward(x, target)``
  returns a float and ``f.backward()`` returns dL/dx;
* a **model** (has ``parameters()``, e.g. ``nnlayers.Model`` or
  ``nnlayers.Sequential``): ``parameters()`` / ``gradients()`` return dicts
  of writable views, ``zero_grad()`` clears the gradients; a model of
  several inputs takes a list ``x`` and may return a list of outputs;
* a **layer** (anything else): ``params`` / ``grads`` dicts of views and
  ``zero_grad()``.

For layers and models the scalar checked is ``L(x) = Σₖ sum(rₖ * outₖ)``
with each ``rₖ`` a fixed random array (``np.random.default_rng(seed)``),
so the analytic gradient is ``f.backward(r)`` for x and the accumulated
grads for every parameter. With ``loss=`` (and ``target=``), a model is
checked together with its losses: ``L(x) = Σₖ wₖ lossₖ(outₖ, targetₖ)``.

This module imports nothing from the rest of ``nnlayers``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

__all__ = ["gradcheck", "GradcheckResult", "GradcheckError"]

_TINY = np.finfo(np.float64).tiny


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when an analytic gradient disagrees with
    finite differences. ``.result`` holds the :class:`GradcheckResult`."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


@dataclass
class GradcheckResult:
    """Outcome of :func:`gradcheck`.

    ok:            every compared value passed
                   ``|a - n| <= atol + rtol * max(|a|, |n|)``.
    max_rel_error: the largest entry of ``errors`` (None entries aside).
    errors:        array name ("x", then parameter names such as "W" or
                   "0.W") -> worst relative error ``|a - n| / max(|a|, |n|)``
                   over its values whose absolute difference exceeds atol
                   (0.0 when there is none). ``inf`` for NaN/Inf values.
                   None when every value of the array, analytic and
                   numeric, is within atol of zero: nothing was compared
                   relatively (shown as "below atol", never as an error of
                   0 that would look like a perfect match).
    worst:         name of the worst array (a failing one, if any fails).
    """

    ok: bool
    max_rel_error: float
    errors: dict = field(default_factory=dict)
    worst: str = ""

    def __repr__(self):
        return (f"GradcheckResult(ok={self.ok}, max_rel_error={self.max_rel_error:.3g}, "
                f"worst={self.worst!r}, errors={{{_errors_text(self.errors)}}})")


def _errors_text(errors):
    return ", ".join(f"{k!r}: " + ("below atol" if v is None else f"{v:.3g}")
                     for k, v in errors.items())


class _ArrayReport:
    """Running comparison of analytic vs numeric values for one array."""

    def __init__(self, rtol, atol):
        self.rtol, self.atol = rtol, atol
        self.ok = True
        self.error = 0.0
        self.compared = 0        # values of magnitude above atol
        self.where = None        # (label, analytic, numeric) of the worst value
        self.fail_where = None   # same, for the worst failing value

    def add(self, label, a, n):
        a, n = float(a), float(n)
        diff = abs(a - n)
        scale = max(abs(a), abs(n))
        self.compared += not scale <= self.atol
        passed = diff <= self.atol + self.rtol * scale      # False for NaN
        if not np.isfinite(a) or not np.isfinite(n):
            rel, passed = float("inf"), False
        elif diff > self.atol:
            rel = diff / max(scale, _TINY)
        else:
            rel = 0.0
        if rel > self.error or (self.where is None and rel > 0):
            self.error, self.where = rel, (label, a, n)
        if not passed:
            if self.ok or rel >= self.fail_where[0]:
                self.fail_where = (rel, label, a, n)
            self.ok = False


def _model_kind(f, target, loss):
    if loss is not None:
        if not hasattr(f, "parameters"):
            raise TypeError("gradcheck(loss=...) checks a model with its loss; "
                            f"f is a {type(f).__name__}")
        if target is None:
            raise ValueError("gradcheck(loss=...) needs the loss's target=")
        return "model+loss"
    if target is not None:
        return "loss"
    if hasattr(f, "parameters"):
        return "model"
    return "layer"


def _trainable_names(f, kind, names):
    """The parameters to check: those of trainable layers."""
    if kind == "layer":
        return list(names) if getattr(f, "trainable", True) else []
    if hasattr(f, "_trainable_parameter_names"):
        keep = set(f._trainable_parameter_names())
        return [k for k in names if k in keep]
    return list(names)


def _param_views(f, kind):
    if kind in ("loss", "function"):
        return {}, {}
    if kind in ("model", "model+loss"):
        return dict(f.parameters()), dict(f.gradients())
    return dict(getattr(f, "params", {}) or {}), dict(getattr(f, "grads", {}) or {})


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _dtype_of(f, xs):
    """The float dtype the check runs in: f's, else the inputs'."""
    d = getattr(f, "dtype", None)
    if d is not None and not callable(d):
        return np.dtype(d)
    return np.result_type(*[x.dtype for x in xs])


def _buffer_views(f):
    """{name: view} of f's buffers (BatchNorm's running statistics):
    a model's ``buffers()``, a layer's ``buffers``; {} for anything else."""
    b = getattr(f, "buffers", None)
    if b is None:
        return {}
    return dict(b() if callable(b) else b)


@contextlib.contextmanager
def _buffers_restored(f):
    """Put f's buffers back as they were when the block ends."""
    saved = [(v, v.copy()) for v in _buffer_views(f).values()]
    try:
        yield
    finally:
        for view, copy in saved:
            view[...] = copy


def _refuse_float32(f, dtype):
    name = type(f).__name__
    fix = ("nl.gradcheck(model.astype(np.float64), x.astype(np.float64))"
           if hasattr(f, "astype") else
           f"a float64 {name} (dtype=np.float64) and x.astype(np.float64)")
    raise ValueError(
        f"gradcheck: {name} computes in float32, whose ~7 significant digits cannot "
        f"resolve central differences (relative errors near 1 would look like a wrong "
        f"gradient). Check a float64 copy instead: {fix}; or pass rtol= and atol= to "
        f"run in float32 all the same")


def gradcheck(f, x, target=None, eps=1e-6, rtol=None, atol=None, seed=0,
              max_elements=512, n_directions=8, raise_exception=True, loss=None,
              loss_weights=None, vjp=None):
    """Check ``f``'s analytic gradients against central finite differences.

    Parameters
    ----------
    f : layer, model or loss
        See the module docstring for the kinds and how they are told apart
        (``loss`` given -> model with its losses; ``target`` alone -> loss;
        ``hasattr(f, "parameters")`` -> model; else layer).
    x : array (N, D), or a list of arrays for a model of several inputs
        The point to check at. Use float64 (and a float64 ``f``) for
        meaningful results; other float dtypes are used as given (expect
        float32 to fail the default tolerances), non-float inputs are
        converted to float64. ``x`` itself is never modified.
    target : array, optional
        The loss target (a list, one per output, with ``loss``); giving it
        alone makes ``f`` a loss.
    loss : nnlayers loss, or a list of one per output, optional
        Check the model ``f`` with its losses on ``target``.
    loss_weights : list of float, optional
        Weights of the losses (default all 1).
    vjp : callable, optional
        Makes ``f`` a plain function ``f(x) -> array``: ``vjp(x, r)``
        returns the gradient of ``sum(r * f(x))`` with respect to x (the
        vector-Jacobian product to check).
    eps : float
        Finite-difference step. Per-element differences divide by the step
        actually stored, ``(v + eps) - (v - eps)`` after rounding to the
        array's dtype.
    rtol, atol : float
        A value passes when ``|a - n| <= atol + rtol * max(|a|, |n|)``
        (a analytic, n numeric). Default 1e-6 and 1e-9, for float64: a
        float32 ``f`` or ``x`` with the defaults raises ValueError saying
        how to check a float64 copy (float32 cannot pass a finite-
        difference check); give both to run in float32 anyway.
    seed : int
        Seeds the probe ``r`` and the random directions.
    max_elements : int
        Arrays with at most this many entries are checked entry by entry;
        larger ones along ``n_directions`` random unit directions ``d``,
        comparing ``(L(v + eps d) - L(v - eps d)) / (2 eps)`` with
        ``dot(grad, d)``.
    n_directions : int
        Number of random directions for large arrays.
    raise_exception : bool
        Raise :class:`GradcheckError` on failure (else just return the
        result with ``ok=False``).

    Returns
    -------
    GradcheckResult

    Notes
    -----
    Parameters are perturbed in place through their views (the C code sees
    the change) and restored to their exact original values afterwards,
    even if ``forward`` raises. Parameters of frozen layers
    (``trainable == False``) are skipped. On return, ``f``'s grads hold the
    analytic gradient of ``L`` (from one ``zero_grad`` + ``forward`` +
    ``backward`` pass at the unperturbed point), and its last forward was
    one of the finite-difference evaluations. Every forward reuses the
    random masks of the analytic pass (Dropout in training mode), and
    buffers the forwards update (BatchNorm's running statistics) are put
    back as they were.
    """
    kind = "function" if vjp is not None else _model_kind(f, target, loss)
    if kind == "function" and not callable(f):
        raise TypeError(f"gradcheck(f, x, vjp=...): f must be callable, got {type(f).__name__}")
    rng = np.random.default_rng(seed)

    multi_in = isinstance(x, (list, tuple))
    xs = []
    for v in _as_list(x):
        xw = np.array(v, copy=True)
        if xw.dtype.kind not in "f":
            if xw.dtype.kind not in "biu":
                raise TypeError(f"x: expected a real array, got dtype {xw.dtype}")
            xw = xw.astype(np.float64)
        xs.append(xw)
    x_arg = xs if multi_in else xs[0]
    x_names = [f"x[{i}]" for i in range(len(xs))] if multi_in else ["x"]
    if rtol is None and atol is None and _dtype_of(f, xs) == np.float32:
        _refuse_float32(f, np.float32)
    rtol = 1e-6 if rtol is None else rtol
    atol = 1e-9 if atol is None else atol

    params, grads = _param_views(f, kind)
    names = _trainable_names(f, kind, params)
    for k in names:
        if k not in grads:
            raise ValueError(f"f: parameter {k!r} has no matching gradient")

    if kind == "model+loss":
        losses = _as_list(loss)
        targets = _as_list(target) if isinstance(loss, (list, tuple)) else [target]
        weights = [1.0] * len(losses) if loss_weights is None else [float(w) for w in loss_weights]
        if not (len(losses) == len(targets) == len(weights)):
            raise ValueError("gradcheck: loss, target and loss_weights must give one per output")

    # Random layers draw new masks at every training-mode forward (the
    # step advances): every evaluation here reuses the analytic pass's
    # masks. The buffers the forwards update are put back at the end.
    step0 = getattr(f, "_step", None) if kind != "function" else None

    def forward(*args):
        if step0 is not None:
            f._step = step0
        return f.forward(*args)

    with _buffers_restored(f):
        # ---- analytic pass ------------------------------------------------
        r = None
        if kind == "loss":
            forward(x_arg, target)
            gxs = [np.asarray(f.backward(), dtype=np.float64)]
        elif kind == "function":
            y = np.asarray(f(x_arg))
            r = [rng.standard_normal(y.shape).astype(y.dtype if y.dtype.kind == "f" else
                                                      np.float64)]
            gxs = [np.asarray(g, dtype=np.float64) for g in _as_list(vjp(x_arg, r[0]))]
        else:
            if hasattr(f, "zero_grad"):
                f.zero_grad()
            raw = forward(x_arg)
            multi_out = isinstance(raw, (list, tuple))
            outs = _as_list(raw)
            if kind == "model+loss":
                gout = []
                for lf, t, w, y in zip(losses, targets, weights, outs):
                    lf.forward(y, t)
                    gout.append(w * np.asarray(lf.backward()))
            else:
                r = []
                for y in outs:
                    y = np.asarray(y)
                    rdt = y.dtype if y.dtype.kind == "f" else np.float64
                    r.append(rng.standard_normal(y.shape).astype(rdt))
                gout = r
            gx = f.backward(gout if multi_out else gout[0])
            gxs = [np.asarray(g, dtype=np.float64) for g in _as_list(gx)]
        if len(gxs) != len(xs):
            raise ValueError(f"f.backward: returned {len(gxs)} input gradients, expected {len(xs)}")
        for name, g, xw in zip(x_names, gxs, xs):
            if g.shape != xw.shape:
                raise ValueError(f"f.backward: returned shape {g.shape} for {name}, expected "
                                 f"{xw.shape}")
        analytic = dict(zip(x_names, gxs))
        for k in names:
            analytic[k] = np.array(grads[k], dtype=np.float64, copy=True)
        r64 = None if r is None else [v.astype(np.float64) for v in r]

        # ---- the scalar and its central difference -------------------------
        def value():
            if kind == "loss":
                return float(forward(x_arg, target))
            if kind == "function":
                return [np.asarray(f(x_arg), dtype=np.float64).copy()]
            outs = _as_list(forward(x_arg))
            if kind == "model+loss":
                total = 0.0
                for lf, t, w, y in zip(losses, targets, weights, outs):
                    total += w * lf._value(y, t)
                return total
            return [np.asarray(y, dtype=np.float64).copy() for y in outs]

        def central(vp, vm, step):
            # (L+ - L-) / step; for layers and models, difference the outputs
            # first so the cancellation happens element by element, then
            # weight by r.
            if kind in ("loss", "model+loss"):
                return (vp - vm) / step
            return float(sum(np.sum(rk * (p - m)) for rk, p, m in zip(r64, vp, vm))) / step

        def check(name, arr, grad):
            rep = _ArrayReport(rtol, atol)
            saved = arr.copy()
            flat_grad = grad.reshape(-1)
            try:
                if arr.size <= max_elements:
                    for i, idx in enumerate(np.ndindex(*arr.shape)):
                        orig = saved[idx]
                        arr[idx] = orig + eps
                        plus = arr[idx]
                        vp = value()
                        arr[idx] = orig - eps
                        minus = arr[idx]
                        vm = value()
                        arr[idx] = orig
                        step = float(plus) - float(minus)
                        if step == 0.0:
                            raise ValueError(f"eps={eps} is below the resolution of {name} "
                                             f"(dtype {arr.dtype}) at index {idx}")
                        rep.add(f"{name}{list(idx)}", flat_grad[i], central(vp, vm, step))
                else:
                    base = saved.astype(np.float64)
                    for j in range(n_directions):
                        d = rng.standard_normal(arr.shape)
                        d /= np.linalg.norm(d)
                        arr[...] = base + eps * d
                        vp = value()
                        arr[...] = base - eps * d
                        vm = value()
                        arr[...] = saved
                        rep.add(f"{name} along direction {j}",
                                float(np.dot(flat_grad, d.reshape(-1))),
                                central(vp, vm, 2.0 * eps))
            finally:
                arr[...] = saved
            return rep

        reports = {name: check(name, xw, analytic[name]) for name, xw in zip(x_names, xs)}
        for k in names:
            reports[k] = check(k, params[k], analytic[k])

        # ---- summary -------------------------------------------------------
        errors = {k: float(rep.error) if rep.compared else None for k, rep in reports.items()}
        ok = all(rep.ok for rep in reports.values())
        failing = {k: rep.fail_where[0] for k, rep in reports.items() if not rep.ok}
        pool = failing if failing else {k: v for k, v in errors.items() if v is not None}
        worst = max(pool, key=lambda k: pool[k]) if pool else x_names[0]
        max_rel = max([v for v in errors.values() if v is not None], default=0.0)
        result = GradcheckResult(ok=ok, max_rel_error=max_rel, errors=errors, worst=worst)

        if not ok and raise_exception:
            rel, label, a, n = reports[worst].fail_where
            raise GradcheckError(
                f"gradcheck failed for {worst!r}: relative error {rel:.3g} at {label} "
                f"(analytic {a:.10g}, numeric {n:.10g}); tolerance "
                f"|a - n| <= atol + rtol * max(|a|, |n|) with rtol={rtol:g}, atol={atol:g}; "
                f"all errors: {{{_errors_text(errors)}}}", result)
        return result
