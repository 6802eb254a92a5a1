"""Finite-difference gradient checking for layers, models and losses.

:func:`gradcheck` compares the analytic gradients an object computes in its
``backward`` with central finite differences of its ``forward``. It works by
duck typing on three kinds of object:

* a **loss** (when ``target`` is given): ``value = f.forward(x, target)``
  returns a float and ``f.backward()`` returns dL/dx;
* a **model** (has ``parameters()``, e.g. ``nnlayers.Sequential``):
  ``parameters()`` / ``gradients()`` return dicts of writable views,
  ``zero_grad()`` clears the gradients;
* a **layer** (anything else): ``params`` / ``grads`` dicts of views and
  ``zero_grad()``.

For layers and models the scalar checked is ``L(x) = sum(r * f.forward(x))``
with ``r`` a fixed random array (``np.random.default_rng(seed)``), so the
analytic gradient is ``f.backward(r)`` for x and the accumulated grads for
every parameter.

This module imports nothing from the rest of ``nnlayers``.
"""

from __future__ import annotations

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
    max_rel_error: the largest entry of ``errors``.
    errors:        array name ("x", then parameter names such as "W" or
                   "0.W") -> worst relative error ``|a - n| / max(|a|, |n|)``
                   over its values whose absolute difference exceeds atol
                   (0.0 when there is none). ``inf`` for NaN/Inf values.
    worst:         name of the worst array (a failing one, if any fails).
    """

    ok: bool
    max_rel_error: float
    errors: dict = field(default_factory=dict)
    worst: str = ""

    def __repr__(self):
        errs = ", ".join(f"{k!r}: {v:.3g}" for k, v in self.errors.items())
        return (f"GradcheckResult(ok={self.ok}, max_rel_error={self.max_rel_error:.3g}, "
                f"worst={self.worst!r}, errors={{{errs}}})")


class _ArrayReport:
    """Running comparison of analytic vs numeric values for one array."""

    def __init__(self, rtol, atol):
        self.rtol, self.atol = rtol, atol
        self.ok = True
        self.error = 0.0
        self.where = None        # (label, analytic, numeric) of the worst value
        self.fail_where = None   # same, for the worst failing value

    def add(self, label, a, n):
        a, n = float(a), float(n)
        diff = abs(a - n)
        scale = max(abs(a), abs(n))
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


def _model_kind(f, target):
    if target is not None:
        return "loss"
    if hasattr(f, "parameters"):
        return "model"
    return "layer"


def _is_trainable(f, kind, name):
    """False for parameters of a frozen layer (their grads are not computed)."""
    try:
        if kind == "layer":
            return bool(getattr(f, "trainable", True))
        prefix = name.split(".", 1)[0]
        return bool(getattr(f[int(prefix)], "trainable", True))
    except Exception:
        return True


def _param_views(f, kind):
    if kind == "loss":
        return {}, {}
    if kind == "model":
        return dict(f.parameters()), dict(f.gradients())
    return dict(getattr(f, "params", {}) or {}), dict(getattr(f, "grads", {}) or {})


def gradcheck(f, x, target=None, eps=1e-6, rtol=1e-6, atol=1e-9, seed=0,
              max_elements=512, n_directions=8, raise_exception=True):
    """Check ``f``'s analytic gradients against central finite differences.

    Parameters
    ----------
    f : layer, model or loss
        See the module docstring for the three kinds and how they are told
        apart (``target is not None`` -> loss; ``hasattr(f, "parameters")``
        -> model; else layer).
    x : array (N, D)
        The point to check at. Use float64 (and a float64 ``f``) for
        meaningful results; other float dtypes are used as given (expect
        float32 to fail the default tolerances), non-float inputs are
        converted to float64. ``x`` itself is never modified.
    target : array, optional
        The loss target; giving it makes ``f`` a loss.
    eps : float
        Finite-difference step. Per-element differences divide by the step
        actually stored, ``(v + eps) - (v - eps)`` after rounding to the
        array's dtype.
    rtol, atol : float
        A value passes when ``|a - n| <= atol + rtol * max(|a|, |n|)``
        (a analytic, n numeric).
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
    one of the finite-difference evaluations.
    """
    kind = _model_kind(f, target)
    rng = np.random.default_rng(seed)

    xw = np.array(x, copy=True)
    if xw.dtype.kind not in "f":
        if xw.dtype.kind not in "biu":
            raise TypeError(f"x: expected a real array, got dtype {xw.dtype}")
        xw = xw.astype(np.float64)

    params, grads = _param_views(f, kind)
    names = [k for k in params if _is_trainable(f, kind, k)]
    for k in names:
        if k not in grads:
            raise ValueError(f"f: parameter {k!r} has no matching gradient")

    # ---- analytic pass ------------------------------------------------
    if kind == "loss":
        f.forward(xw, target)
        gx = np.asarray(f.backward(), dtype=np.float64)
        r = None
    else:
        if hasattr(f, "zero_grad"):
            f.zero_grad()
        y = np.asarray(f.forward(xw))
        rdt = y.dtype if y.dtype.kind == "f" else np.float64
        r = rng.standard_normal(y.shape).astype(rdt)
        gx = np.asarray(f.backward(r), dtype=np.float64)
    if gx.shape != xw.shape:
        raise ValueError(f"f.backward: returned shape {gx.shape}, expected x's shape {xw.shape}")
    analytic = {"x": gx}
    for k in names:
        analytic[k] = np.array(grads[k], dtype=np.float64, copy=True)
    r64 = None if r is None else r.astype(np.float64)

    # ---- the scalar and its central difference -------------------------
    def value():
        if kind == "loss":
            return float(f.forward(xw, target))
        return np.asarray(f.forward(xw), dtype=np.float64).copy()

    def central(vp, vm, step):
        # (L+ - L-) / step; for layers, difference the outputs first so the
        # cancellation happens element by element, then weight by r.
        if kind == "loss":
            return (vp - vm) / step
        return float(np.sum(r64 * (vp - vm))) / step

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

    reports = {"x": check("x", xw, analytic["x"])}
    for k in names:
        reports[k] = check(k, params[k], analytic[k])

    # ---- summary -------------------------------------------------------
    errors = {k: float(rep.error) for k, rep in reports.items()}
    ok = all(rep.ok for rep in reports.values())
    failing = {k: rep.fail_where[0] for k, rep in reports.items() if not rep.ok}
    pool = failing if failing else errors
    worst = max(pool, key=lambda k: pool[k]) if pool else "x"
    max_rel = max(errors.values()) if errors else 0.0
    result = GradcheckResult(ok=ok, max_rel_error=max_rel, errors=errors, worst=worst)

    if not ok and raise_exception:
        rel, label, a, n = reports[worst].fail_where
        raise GradcheckError(
            f"gradcheck failed for {worst!r}: relative error {rel:.3g} at {label} "
            f"(analytic {a:.10g}, numeric {n:.10g}); tolerance "
            f"|a - n| <= atol + rtol * max(|a|, |n|) with rtol={rtol:g}, atol={atol:g}; "
            f"all errors: {{" + ", ".join(f"{k!r}: {v:.3g}" for k, v in errors.items()) + "}",
            result)
    return result
