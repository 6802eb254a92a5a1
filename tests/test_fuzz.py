"""Property tests (hypothesis): every layer kind, every loss and small
Sequential models against their NumPy twins in ``nnlayers._reference``,
over random shapes (N 0..6, widths 1..6), dtypes (float32 / float64, the
input's and the layer's), memory layouts (C, Fortran, strided, negative
strides, non-native byte order, unaligned, read-only) and values (finite
normals; extremes: +-1e30, +-1e-30, subnormals, +-0, +-1e300 in float64;
and, in the "wild" regime, inf and nan).

Every call must either give the reference's result or raise a clean
ValueError/TypeError exactly when the input is invalid; it must never
crash and never write to its input.

How results are compared
------------------------
Tolerances are error bounds computed from the inputs, not fixed numbers:
an elementwise result may differ by a few ulps of itself, a matrix product
by (K+2) ulps of sum |a_k b_k| (the summation order of BLAS and NumPy
differ), and so on. Non-finite results must match exactly (nan for nan,
the same infinity) except where two correct implementations may
legitimately differ: where an input of a matrix product or of a row
reduction is inf/nan, or a product overflows, only "finite or not" must
agree (for example -inf + 1e30*1e30 is -inf with a fused multiply-add and
nan without). One value is not compared: the reference's cross-entropy is
nan when a class of target weight 0 has a logit of -inf, where nnlayers
gives the correct finite loss (a reference bug, pinned by its own test).
Sequential models are compared on finite inputs of moderate size, with
bounds propagated through the layers; with extremes and inf/nan they are
run for "no crash, clean errors, NonFiniteLossError leaves the parameters
alone".

Profiles (registered in this module)
------------------------------------
"ci" (default)              max_examples=100 per property, deadline=None
"heavy" (NNLAYERS_HEAVY=1)  max_examples=2000 per property
Layer kinds and losses are parametrized, so "per property" means per kind.
"""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnlayers as nl
import nnlayers._reference as ref

# extremes and inf/nan are fed on purpose: NumPy's casts and the reference
# warn about overflow and invalid values, which is expected here
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")]

settings.register_profile(
    "ci", max_examples=100, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
settings.register_profile("heavy", parent=settings.get_profile("ci"), max_examples=2000)
PROFILE = settings.get_profile("heavy" if os.environ.get("NNLAYERS_HEAVY") == "1" else "ci")

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = (F32, F64)
EPS = {F32: float(np.finfo(np.float32).eps), F64: float(np.finfo(np.float64).eps)}
TINY = {F32: float(np.finfo(np.float32).smallest_subnormal),
        F64: float(np.finfo(np.float64).smallest_subnormal)}
BIG = {F32: float(np.finfo(np.float32).max), F64: float(np.finfo(np.float64).max)}
R = 16          # safety factor on every error bound
REGIMES = ("safe", "extreme", "wild")
LAYOUTS = ("C", "F", "strided", "negative", "swapped", "swapped-F", "unaligned", "readonly")
ACT_CLASSES = {"identity": nl.Identity, "relu": nl.ReLU, "leaky_relu": nl.LeakyReLU,
               "sigmoid": nl.Sigmoid, "tanh": nl.Tanh, "softplus": nl.Softplus,
               "step": nl.Step, "cos": nl.Cos, "gelu": nl.GELU, "silu": nl.SiLU,
               "elu": nl.ELU, "softsign": nl.Softsign, "hardtanh": nl.Hardtanh,
               "softmax": nl.Softmax, "log_softmax": nl.LogSoftmax}
# the arguments an activation is drawn with, as the reference takes them:
# LeakyReLU's slope as a number, the others' as a dict by name
ACT_ARGS = {
    "leaky_relu": st.sampled_from([0.01, 0.2, -0.5, 1.5, 0.0]),
    "gelu": st.sampled_from(["none", "tanh"]).map(lambda v: {"approximate": v}),
    "elu": st.sampled_from([1.0, 0.5, 2.0, 0.0, -0.5]).map(lambda v: {"alpha": v}),
    "hardtanh": st.sampled_from([(-1.0, 1.0), (-0.5, 2.0), (0.0, 6.0), (-3.0, -1.0)]).map(
        lambda v: {"min_val": v[0], "max_val": v[1]}),
}


def draw_args(draw, kind):
    """An activation's arguments (see ACT_ARGS); 0.01 for kinds without."""
    return draw(ACT_ARGS[kind]) if kind in ACT_ARGS else 0.01


def make_activation(kind, args, dtype=None):
    """The layer of an activation kind with the arguments of draw_args."""
    if kind == "leaky_relu":
        return nl.LeakyReLU(args, dtype=dtype)
    return ACT_CLASSES[kind](**(args if isinstance(args, dict) else {}), dtype=dtype)


# ---------------------------------------------------------------------------
# values and layouts
# ---------------------------------------------------------------------------

def extremes(dt):
    sub = 1e-40 if dt == F32 else 1e-310
    vals = [1e30, -1e30, 1e-30, -1e-30, sub, -sub, 0.0, -0.0]
    if dt == F64:
        vals += [1e300, -1e300]
    return [float(dt.type(v)) for v in vals]


def elements(dt, regime, lo=-8.0, hi=8.0):
    normal = st.floats(lo, hi, width=8 * dt.itemsize)
    parts = [normal, normal, normal]
    if regime != "safe":
        parts.append(st.sampled_from(extremes(dt)))
    if regime == "wild":
        parts.append(st.sampled_from([math.inf, -math.inf, math.nan]))
    return st.one_of(parts)


def arrays(dt, shape, regime, **kw):
    return hnp.arrays(dt, shape, elements=elements(dt, regime, **kw))


def in_layout(a, how):
    """A new array with a's values and dtype in the memory layout `how`."""
    full = (slice(None, None, -1),) * a.ndim
    if how == "C":
        out = np.ascontiguousarray(a).copy()
    elif how == "F":
        out = np.asfortranarray(a).copy()
    elif how == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        idx = tuple(slice(1, None, 2) for _ in a.shape)
        big[idx] = a
        out = big[idx]
    elif how == "negative":
        out = a[full].copy()[full]
    elif how == "swapped":
        out = a.astype(a.dtype.newbyteorder())
    elif how == "swapped-F":
        out = np.asfortranarray(a.astype(a.dtype.newbyteorder()))
    elif how == "unaligned":
        if a.size == 0:
            return a.copy()
        buf = bytearray(a.nbytes + 1)
        out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        out[...] = a
    elif how == "readonly":
        out = a.copy()
        out.flags.writeable = False
    else:
        raise AssertionError(how)
    assert out.shape == a.shape and np.array_equal(out, a, equal_nan=True)
    return out


def f64(a):
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------
# comparison with error bounds
# ---------------------------------------------------------------------------

def compare(got, want, tol, loose=None, skip=None, what="result"):
    """got vs want elementwise. Where `skip`: nothing. Where `loose`: both
    finite or both not, and if finite within tol. Elsewhere: a finite want
    needs a finite got within tol; nan needs nan; an infinity the same
    infinity."""
    got = np.asarray(got)
    want_a = np.asarray(want)
    assert got.shape == want_a.shape, f"{what}: shape {got.shape}, expected {want_a.shape}"
    g, w = f64(got), f64(want_a)
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), w.shape)
    loose = np.zeros(w.shape, bool) if loose is None else np.broadcast_to(loose, w.shape)
    skip = np.zeros(w.shape, bool) if skip is None else np.broadcast_to(skip, w.shape)
    fg, fw = np.isfinite(g), np.isfinite(w)
    with np.errstate(invalid="ignore", over="ignore"):
        off = np.abs(g - w) > np.where(np.isnan(tol), np.inf, tol)
    both_finite_bad = fg & fw & off
    strict = ~skip & ~loose
    bad = strict & fw & (~fg | off)
    bad |= strict & np.isnan(w) & ~np.isnan(g)
    bad |= strict & np.isinf(w) & (g != w)
    bad |= ~skip & loose & ((fg != fw) | both_finite_bad)
    if bad.any():
        idx = [tuple(int(i) for i in ix) for ix in np.argwhere(bad)[:5]]
        rows = "\n".join(f"  at {ix}: got {g[ix]!r}, expected {w[ix]!r} (tol {tol[ix]:.3g}, "
                         f"{'loose' if loose[ix] else 'strict'})" for ix in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} values differ\n{rows}")


def product_bound(A, B, bias=None):
    """Error bound (and 'loose' mask) for A @ B (+ bias) computed in A's
    dtype in any summation order. Loose where an input is inf/nan or the
    magnitudes overflow."""
    dt = A.dtype
    a, b = np.abs(f64(A)), np.abs(f64(B))
    K = A.shape[1]
    with np.errstate(all="ignore"):
        scale = a @ b if K else np.zeros((A.shape[0], B.shape[1]))
        # a @ b of absolute values can be nan (inf * 0): treat as unbounded
        scale = np.where(np.isnan(scale), np.inf, scale)
        if bias is not None:
            scale = scale + np.abs(f64(bias))[None, :]
        tol = R * (K + 2) * (EPS[dt] * scale + TINY[dt])
    nonfinite_in = (~np.isfinite(f64(A)).all(axis=1))[:, None] | \
                   (~np.isfinite(f64(B)).all(axis=0))[None, :]
    if bias is not None:
        nonfinite_in = nonfinite_in | ~np.isfinite(f64(bias))[None, :]
    overflow = ~np.isfinite(scale) | (scale > BIG[dt] / 4)
    tol = np.where(np.isfinite(tol), tol, np.inf)
    return tol, nonfinite_in | overflow


def row_any(mask):
    return np.broadcast_to(mask.any(axis=1, keepdims=True), mask.shape)


# ---------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------

@st.composite
def layer_cases(draw, kind):
    regime = draw(st.sampled_from(REGIMES))
    N, D = draw(st.integers(0, 6)), draw(st.integers(1, 6))
    in_dt = draw(st.sampled_from(DTYPES))
    case = {"kind": kind, "regime": regime, "slope": 0.01, "W": None, "b": None}
    if kind == "linear":
        dt = draw(st.sampled_from(DTYPES))
        O = draw(st.integers(1, 6))
        case["layer_dtype"] = case["eff"] = dt
        case["W"] = draw(arrays(dt, (D, O), regime))
        if draw(st.booleans()):
            case["b"] = draw(arrays(dt, (O,), regime))
    else:
        O = D
        ldt = draw(st.sampled_from([None, F32, F64]))
        case["layer_dtype"] = ldt
        case["eff"] = ldt if ldt is not None else (F32 if in_dt == F32 else F64)
        case["slope"] = draw_args(draw, kind)
    case["x"] = draw(arrays(in_dt, (N, D), regime))
    case["x_layout"] = draw(st.sampled_from(LAYOUTS))
    gy_dt = draw(st.sampled_from(DTYPES))
    case["gy"] = draw(arrays(gy_dt, (N, O), regime))
    case["gy_layout"] = draw(st.sampled_from(LAYOUTS))
    mistakes = [None] * 6 + ["ndim", "gy_shape"] + (["width"] if kind == "linear" else [])
    case["mistake"] = draw(st.sampled_from(mistakes))
    return case


def make_layer(case):
    kind, ldt = case["kind"], case["layer_dtype"]
    if kind == "linear":
        D, O = case["W"].shape
        layer = nl.Linear(D, O, bias=case["b"] is not None, dtype=ldt, seed=0)
        layer.params["W"] = case["W"]
        if case["b"] is not None:
            layer.params["b"] = case["b"]
        return layer
    return make_activation(kind, case["slope"], ldt)


def check_layer_forward(case, y, want, x_eff):
    kind, dt = case["kind"], case["eff"]
    eps, tiny = EPS[dt], TINY[dt]
    w = f64(want)
    if kind == "linear":
        tol, loose = product_bound(x_eff, case["W"].astype(dt),
                                   None if case["b"] is None else case["b"].astype(dt))
        compare(y, want, tol, loose=loose, what="linear forward")
    elif kind == "softmax":
        compare(y, want, R * x_eff.shape[1] * (eps * np.abs(w) + tiny), what="softmax forward")
    elif kind == "log_softmax":
        tol, loose = log_softmax_bound(x_eff, w)
        compare(y, want, tol, loose=loose, what="log_softmax forward")
    else:
        compare(y, want, R * (eps * np.abs(w) + tiny), what=f"{kind} forward")


def log_softmax_bound(x_eff, w):
    dt = x_eff.dtype
    x = f64(x_eff)
    with np.errstate(all="ignore"):
        m = x.max(axis=1, keepdims=True)
        lse = np.log(np.exp(x - m).sum(axis=1, keepdims=True))
        # z - m, then log(s) with s >= 1 known to ~C ulps (so log(s) to ~C
        # ulps absolute, even when it is tiny), then the difference
        scale = np.abs(x - m) + np.abs(lse) + np.abs(w) + 1
        tol = R * x.shape[1] * (EPS[dt] * scale + TINY[dt])
    tol = np.where(np.isfinite(tol), tol, np.inf)
    return tol, None


def check_layer_backward(case, gx, grads, x_eff, gy_eff, params):
    kind, dt, slope = case["kind"], case["eff"], case["slope"]
    eps, tiny = EPS[dt], TINY[dt]
    gx_want, grads_want = ref.layer_backward(kind, gy_eff, x_eff, params, slope)
    assert set(grads) == set(grads_want)
    g = f64(gy_eff)
    gy_bad = ~np.isfinite(g)
    if kind == "linear":
        W = params["W"]
        tol, loose = product_bound(gy_eff, W.T)
        compare(gx, gx_want, tol, loose=loose, what="linear backward dx")
        tol, loose = product_bound(x_eff.T, gy_eff)
        compare(grads["W"], grads_want["W"], tol, loose=loose, what="linear dW")
        if "b" in grads_want:
            tol, loose = product_bound(np.ones((1, len(g)), dt), gy_eff)
            compare(grads["b"], grads_want["b"], tol[0], loose=loose[0], what="linear db")
    elif kind == "softmax":
        a = f64(ref.softmax_forward(x_eff))
        with np.errstate(all="ignore"):
            s = (np.abs(g) * a).sum(axis=1, keepdims=True)
            tol = R * g.shape[1] * (eps * a * (np.abs(g) + s) + tiny)
        compare(gx, gx_want, np.where(np.isfinite(tol), tol, np.inf), loose=row_any(gy_bad),
                what="softmax backward")
    elif kind == "log_softmax":
        a = f64(ref.log_softmax_forward(x_eff))
        fwd_tol, _ = log_softmax_bound(x_eff, a)
        with np.errstate(all="ignore"):
            p = np.exp(a)
            s = np.abs(g).sum(axis=1, keepdims=True)
            tol = R * g.shape[1] * (eps * (np.abs(g) + p * s) + tiny) + p * s * fwd_tol
        compare(gx, gx_want, np.where(np.isfinite(tol), tol, np.inf), loose=row_any(gy_bad),
                what="log_softmax backward")
    else:
        with np.errstate(all="ignore"):
            tol = R * (eps * (np.abs(f64(gx_want)) + np.abs(g)) + tiny)
        compare(gx, gx_want, np.where(np.isfinite(tol), tol, np.inf), loose=gy_bad,
                what=f"{kind} backward")


def bad_input(case, which):
    x = np.asarray(case["x"])
    if which == "ndim":
        return x.reshape(-1) if x.size % 2 else x[..., None]
    return np.zeros((x.shape[0], x.shape[1] + 1), x.dtype)      # "width"


def _lsm_tie():
    return {"kind": "log_softmax", "regime": "extreme", "slope": 0.01, "W": None, "b": None,
            "layer_dtype": None, "eff": F64, "x": np.array([[1e30, 1e30], [-2.0, 3.0]]),
            "x_layout": "C", "gy": np.array([[1.0, 0.0], [0.5, 0.5]]), "gy_layout": "C",
            "mistake": None}


def _layer_test(kind):
    def test(case):
        one_layer_case(case)

    if kind == "log_softmax":
        # rows of equal large logits: log-softmax is -log(2) for each entry
        test = example(case=_lsm_tie())(test)
    test = settings(PROFILE)(given(case=layer_cases(kind))(test))
    test.__name__ = test.__qualname__ = f"test_layer_matches_reference_{kind}"
    return test


for _kind in ref.LAYER_KINDS:     # one property per layer kind
    globals()[f"test_layer_matches_reference_{_kind}"] = _layer_test(_kind)


def one_layer_case(case):
    note({k: v for k, v in case.items() if k not in ("x", "gy", "W", "b")})
    layer = make_layer(case)
    dt = case["eff"]
    x_in = in_layout(case["x"], case["x_layout"])
    gy_in = in_layout(case["gy"], case["gy_layout"])
    x_before, gy_before = x_in.copy(), gy_in.copy()
    if case["mistake"] in ("ndim", "width"):
        with pytest.raises(ValueError):
            layer.forward(bad_input(case, case["mistake"]))
        with pytest.raises(ValueError):
            layer.backward(gy_in)              # nothing pending
    y = layer.forward(x_in)
    assert isinstance(y, np.ndarray) and y.dtype == dt and y.flags.c_contiguous
    assert y.shape == (x_in.shape[0], case["gy"].shape[1])
    x_eff = np.array(case["x"], dtype=dt)
    params = {k: np.array(v) for k, v in layer.params.items()} or None
    if case["kind"] == "linear" and "b" not in layer.params:
        params["b"] = None
    with np.errstate(all="ignore"):
        want = ref.layer_forward(case["kind"], x_eff, params, case["slope"])
    check_layer_forward(case, y, want, x_eff)

    if case["mistake"] == "gy_shape":
        bad = np.zeros((gy_in.shape[0] + 1, gy_in.shape[1]), dt)
        with pytest.raises(ValueError):
            layer.backward(bad)                # the pending forward survives
    layer.zero_grad()
    gx = layer.backward(gy_in)
    assert isinstance(gx, np.ndarray) and gx.dtype == dt and gx.shape == x_in.shape
    gy_eff = np.array(case["gy"], dtype=dt)
    grads = {k: np.array(v) for k, v in layer.grads.items()}
    with np.errstate(all="ignore"):
        check_layer_backward(case, gx, grads, x_eff, gy_eff, params)
    with pytest.raises(ValueError):
        layer.backward(gy_in)                  # each forward serves one backward
    assert np.array_equal(x_in, x_before, equal_nan=True), "forward wrote to its input"
    assert np.array_equal(gy_in, gy_before, equal_nan=True), "backward wrote to its input"


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------

LOSSES = {"softmax_cross_entropy": (nl.SoftmaxCrossEntropy, ref.softmax_cross_entropy),
          "nll": (nl.NLL, ref.nll),
          "binary_cross_entropy": (nl.BinaryCrossEntropy, ref.binary_cross_entropy),
          "mse": (nl.MSE, ref.mse)}
LABEL_DTYPES = [np.dtype(t) for t in (np.int64, np.int32, np.uint8, np.uint64, np.int16)]


@st.composite
def loss_cases(draw, name):
    regime = draw(st.sampled_from(REGIMES))
    N, C = draw(st.integers(0, 6)), draw(st.integers(1, 6))
    pred_dt = draw(st.sampled_from(DTYPES))
    case = {"name": name, "regime": regime, "error": N == 0}
    case["pred"] = draw(arrays(pred_dt, (N, C), regime))
    case["pred_layout"] = draw(st.sampled_from(LAYOUTS))
    classify = name in ("softmax_cross_entropy", "nll")
    forms = ["labels", "float_labels", "dense"] if classify else \
        (["dense", "flat"] if C == 1 else ["dense"])
    form = draw(st.sampled_from(forms))
    case["form"] = form
    t_dt = draw(st.sampled_from(DTYPES))
    if form in ("labels", "float_labels"):
        labels = np.array(draw(st.lists(st.integers(0, C - 1), min_size=N, max_size=N)),
                          dtype=np.int64)
        if N and draw(st.integers(0, 7)) == 0:       # an invalid label
            i = draw(st.integers(0, N - 1))
            bad = draw(st.sampled_from([C, C + 5, -1] if form == "labels"
                                       else [C, -1.0, 0.5, math.nan, math.inf]))
            labels = labels.astype(np.float64 if form == "float_labels" else np.int64)
            labels[i] = bad
            case["error"] = True
        if form == "labels":
            ldt = draw(st.sampled_from(LABEL_DTYPES))
            if labels.size and (labels.min() < 0 and ldt.kind == "u"):
                ldt = np.dtype(np.int64)
            target = labels.astype(ldt)
        else:
            target = labels.astype(t_dt)
    else:
        shape = (N, C) if form == "dense" else (N,)
        if name == "binary_cross_entropy":
            target = draw(hnp.arrays(t_dt, shape, elements=st.one_of(
                st.floats(0, 1, width=8 * t_dt.itemsize),
                st.sampled_from([0.0, 1.0, float(t_dt.type(1e-30)), float(t_dt.type(1e-40))]))))
            if target.size and draw(st.integers(0, 7)) == 0:
                target.flat[draw(st.integers(0, target.size - 1))] = draw(
                    st.sampled_from([1.5, -0.25, math.nan, math.inf]))
            eff = F32 if pred_dt == F32 else F64
            with np.errstate(all="ignore"):
                t_eff = target.astype(eff)
            if not np.all((t_eff >= 0) & (t_eff <= 1)):
                case["error"] = True
        else:
            target = draw(arrays(t_dt, shape, regime))
    case["target"] = target
    case["target_layout"] = draw(st.sampled_from(LAYOUTS))
    return case


def loss_bounds(case, pred_eff, t_ref, want_grad):
    """(value tol, value loose, grad tol, grad loose) for the case."""
    name, dt = case["name"], pred_eff.dtype
    eps, tiny = EPS[dt], TINY[dt]
    z = f64(pred_eff)
    N, C = z.shape
    with np.errstate(all="ignore"):
        if name in ("softmax_cross_entropy", "nll"):
            T = np.zeros((N, C))
            if t_ref.ndim == 1:
                T[np.arange(N), t_ref.astype(np.int64)] = 1
            else:
                T = f64(t_ref)
        else:
            T = f64(t_ref).reshape(N, C)
        bad_in = ~np.isfinite(z) | ~np.isfinite(T)
        if name == "softmax_cross_entropy":
            m = z.max(axis=1, keepdims=True)
            lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
            # sum_c T_nc rounds to within C * eps * sum_c |T_nc|, whatever
            # the order: with targets of both signs it can cancel
            tabs = np.abs(T).sum(axis=1, keepdims=True)
            prod = np.where(T != 0, np.abs(T * z), 0)
            scale = (np.abs(lse) * tabs + prod.sum(axis=1, keepdims=True)).sum() / N
            p = f64(ref.softmax_forward(z))
            gtol = R * C * (eps * (p * tabs + np.abs(T)) / N + tiny)
            gloose = row_any(bad_in)
        elif name == "nll":
            scale = np.where(T != 0, np.abs(T * z), 0).sum() / N
            gtol = R * (eps * np.abs(T) / N + tiny)
            gloose = bad_in
        elif name == "binary_cross_entropy":
            sp = np.logaddexp(0, z)
            scale = (np.abs(sp) + np.abs(T * z)).sum() / N
            s = 1 / (1 + np.exp(-z))
            gtol = R * (eps * (np.abs(s) + np.abs(T)) / N + tiny)
            gloose = np.zeros(z.shape, bool)
        else:
            scale = (0.5 * (np.abs(z) + np.abs(T)) ** 2).sum() / N
            gtol = R * (eps * (np.abs(z) + np.abs(T)) / N + tiny)
            gloose = np.zeros(z.shape, bool)
        vtol = R * max(C, 2) * (eps * scale + 1e-300)
    vloose = bool(bad_in.any()) or not np.isfinite(scale) or scale > 1e300
    # the reference's cross-entropy computes 0 * -inf = nan for a class of
    # weight 0 whose logit is -inf, where nnlayers gives the right (finite)
    # loss: see test_reference_cross_entropy_with_minus_inf_logit_of_weight_0
    vskip = name == "softmax_cross_entropy" and bool(np.any((T == 0) & np.isneginf(z)))
    gtol = np.where(np.isfinite(gtol), gtol, np.inf).reshape(np.shape(want_grad))
    return vtol, vloose, vskip, gtol, gloose.reshape(np.shape(want_grad))


def _loss_test(name):
    def test(case):
        one_loss_case(case)

    test = settings(PROFILE)(given(case=loss_cases(name))(test))
    test.__name__ = test.__qualname__ = f"test_loss_matches_reference_{name}"
    return test


for _name in LOSSES:              # one property per loss
    globals()[f"test_loss_matches_reference_{_name}"] = _loss_test(_name)


def one_loss_case(case):
    note({k: case[k] for k in ("name", "regime", "form", "pred_layout", "target_layout", "error")})
    cls, twin = LOSSES[case["name"]]
    loss = cls()
    pred_in = in_layout(case["pred"], case["pred_layout"])
    t_in = in_layout(case["target"], case["target_layout"])
    pred_before, t_before = pred_in.copy(), t_in.copy()
    if case["error"]:
        with pytest.raises((ValueError, TypeError)):
            loss.forward(pred_in, t_in)
        with pytest.raises(ValueError):
            loss.backward()
        return
    value = loss.forward(pred_in, t_in)
    grad = loss.backward()
    assert isinstance(value, float)
    dt = F32 if case["pred"].dtype == F32 else F64
    assert isinstance(grad, np.ndarray) and grad.dtype == dt and grad.shape == pred_in.shape
    pred_eff = np.array(case["pred"], dtype=dt)
    t_ref = case["target"] if case["form"] in ("labels", "float_labels") else \
        np.array(case["target"], dtype=dt)
    with np.errstate(all="ignore"):
        want_value, want_grad = twin(pred_eff, t_ref)
        vtol, vloose, vskip, gtol, gloose = loss_bounds(case, pred_eff, t_ref, want_grad)
    compare(np.array(value), np.array(want_value), vtol, loose=np.array(vloose),
            skip=np.array(vskip), what=f"{case['name']} value")
    compare(grad, want_grad, gtol, loose=gloose, what=f"{case['name']} gradient")
    with pytest.raises(ValueError):
        loss.backward()
    assert np.array_equal(pred_in, pred_before, equal_nan=True)
    assert np.array_equal(t_in, t_before, equal_nan=True)


def test_reference_cross_entropy_with_minus_inf_logit_of_weight_0():
    """A class with target weight 0 contributes nothing to the cross-entropy,
    even with a logit of -inf (probability 0): nnlayers gives the finite
    loss, and so must its NumPy twin (nll already skips weight-0 entries;
    softmax_cross_entropy multiplies 0 * -inf = nan)."""
    z = np.array([[0.0, -np.inf], [1.0, 2.0]])
    for target in (np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]])):
        value = nl.SoftmaxCrossEntropy().forward(z, target)
        expected = math.log1p(math.exp(-1.0)) / 2
        assert value == pytest.approx(expected, rel=1e-12)
        ref_value, _ = ref.softmax_cross_entropy(z, target)
        assert ref_value == pytest.approx(expected, rel=1e-12), \
            f"reference gives {ref_value} for target {target.tolist()}"


# ---------------------------------------------------------------------------
# equal logits: softmax is uniform whatever their size
# ---------------------------------------------------------------------------

@st.composite
def equal_logits(draw):
    """(v, C, dtype): C equal logits of value v, any finite float of dtype."""
    dt = draw(st.sampled_from(DTYPES))
    v = draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=8 * dt.itemsize),
                       st.sampled_from([float(dt.type(u)) for u in (1e5, 1e16, 1e30, -1e30)])))
    return v, draw(st.integers(1, 6)), dt


@settings(PROFILE)
@given(case=equal_logits())
def test_softmax_of_equal_logits_is_uniform(case):
    v, C, dtype = case
    z = np.full((2, C), v, dtype=dtype)
    compare(nl.Softmax()(z), np.full((2, C), 1 / C), R * EPS[dtype] / C, what="softmax")


@settings(PROFILE)
@given(case=equal_logits())
@example(case=(1e30, 2, F64))
@example(case=(1e16, 2, F32))
def test_log_softmax_of_equal_logits_is_minus_log_c(case):
    """log_softmax(z) = z - logsumexp(z) = -log C for C equal logits of any
    finite size, and its VJP is g - sum(g)/C."""
    v, C, dtype = case
    z = np.full((2, C), v, dtype=dtype)
    layer = nl.LogSoftmax()
    out = layer.forward(z)
    compare(out, np.full((2, C), -math.log(C)), R * EPS[dtype] * (1 + math.log(C)),
            what=f"log_softmax of {C} equal logits {v!r} ({np.dtype(dtype).name})")
    g = np.zeros((2, C), dtype)
    g[:, 0] = 1
    compare(layer.backward(g), g - 1 / C, R * EPS[dtype] * 2,
            what=f"log_softmax VJP at {C} equal logits {v!r}")


@settings(PROFILE)
@given(case=equal_logits())
@example(case=(1e30, 2, F64))
@example(case=(1e16, 2, F32))
def test_cross_entropy_of_equal_logits_is_log_c(case):
    """Cross-entropy of C equal logits is log C for any label (and the
    gradient 1/C - onehot), whatever the logits' size."""
    v, C, dtype = case
    z = np.full((2, C), v, dtype=dtype)
    loss = nl.SoftmaxCrossEntropy()
    value = loss.forward(z, np.zeros(2, np.int64))
    compare(np.array(value), np.array(math.log(C)), R * EPS[dtype] * (1 + math.log(C)),
            what=f"cross-entropy of {C} equal logits {v!r} ({np.dtype(dtype).name})")
    want = np.full((2, C), 1 / C) / 2
    want[:, 0] -= 1 / 2
    compare(loss.backward(), want, R * EPS[dtype], what="cross-entropy gradient")


# ---------------------------------------------------------------------------
# Sequential
# ---------------------------------------------------------------------------

SEQ_ACTS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "softplus", "step", "cos",
            "gelu", "silu", "elu", "softsign", "hardtanh", "softmax", "log_softmax")
# bounds of |f'| and |f''| (where f' is continuous) per activation
LIPSCHITZ = {"identity": 1.0, "relu": 1.0, "sigmoid": 0.25, "tanh": 1.0, "softplus": 1.0,
             "cos": 1.0, "gelu": 1.13, "silu": 1.1, "softsign": 1.0, "hardtanh": 1.0}
SECOND = {"identity": 0.0, "relu": 0.0, "leaky_relu": 0.0, "sigmoid": 0.1, "tanh": 0.8,
          "softplus": 0.25, "cos": 1.0, "gelu": 0.8, "silu": 0.5, "softsign": 2.0,
          "hardtanh": 0.0}


def lipschitz(kind, args):
    if kind == "leaky_relu":
        return max(1.0, abs(args))
    if kind == "elu":
        return max(1.0, abs(args["alpha"]))
    return LIPSCHITZ[kind]


def second(kind, args):
    return abs(args["alpha"]) if kind == "elu" else SECOND[kind]


def jumps(kind, args):
    """(where, by how much) the derivative jumps."""
    if kind == "relu":
        return [(0.0, 1.0)]
    if kind == "leaky_relu":
        return [(0.0, abs(1 - args))]
    if kind == "elu":
        return [(0.0, abs(1 - args["alpha"]))]
    if kind == "hardtanh":
        return [(args["min_val"], 1.0), (args["max_val"], 1.0)]
    return []


@st.composite
def model_cases(draw, regime_choices):
    regime = draw(st.sampled_from(regime_choices))
    dt = draw(st.sampled_from(DTYPES))
    n_layers = draw(st.integers(2, 3))
    kinds = draw(st.lists(st.sampled_from(("linear",) + SEQ_ACTS), min_size=n_layers,
                          max_size=n_layers).filter(lambda ks: "linear" in ks))
    N, D = draw(st.integers(0, 6)), draw(st.integers(1, 6))
    specs, width = [], D
    for kind in kinds:
        if kind == "linear":
            O = draw(st.integers(1, 6))
            W = draw(arrays(dt, (width, O), regime, lo=-2, hi=2))
            b = draw(arrays(dt, (O,), regime, lo=-2, hi=2)) if draw(st.booleans()) else None
            specs.append(("linear", {"W": W, "b": b}, 0.01))
            width = O
        else:
            specs.append((kind, None, draw_args(draw, kind)))
    in_dt = draw(st.sampled_from(DTYPES))
    x = draw(arrays(in_dt, (N, D), regime))
    gy = draw(arrays(dt, (N, width), regime))
    return {"regime": regime, "dtype": dt, "specs": specs, "x": x,
            "x_layout": draw(st.sampled_from(LAYOUTS)), "gy": gy,
            "gy_layout": draw(st.sampled_from(LAYOUTS)),
            "labels": np.array(draw(st.lists(st.integers(0, width - 1), min_size=N,
                                             max_size=N)), dtype=np.int64)}


def class_loss(model):
    """The class loss that fits the model's last layer: a final Softmax
    or LogSoftmax takes the probability or log-probability loss (with
    logits, training refuses the pair)."""
    last = model[len(model) - 1]
    if isinstance(last, nl.Softmax):
        return nl.SoftmaxCrossEntropy(from_logits=False)
    if isinstance(last, nl.LogSoftmax):
        return nl.NLL()
    return nl.SoftmaxCrossEntropy()


def build_model(case):
    layers = []
    for kind, p, slope in case["specs"]:
        if kind == "linear":
            W, b = p["W"], p["b"]
            layer = nl.Linear(W.shape[0], W.shape[1], bias=b is not None,
                              dtype=case["dtype"], seed=1)
            layer.params["W"] = W
            if b is not None:
                layer.params["b"] = b
        else:
            layer = make_activation(kind, slope)
        layers.append(layer)
    return nl.Sequential(*layers)


def chain_bounds(specs, caches, out, dt):
    """Forward error bound of every layer's output, by propagating
    Lipschitz constants and rounding errors through the chain."""
    eps, tiny = EPS[dt], TINY[dt]
    E = np.zeros(caches[0].shape)
    bounds = []
    for i, (kind, p, slope) in enumerate(specs):
        h = f64(caches[i])
        a = f64(caches[i + 1] if i + 1 < len(caches) else out)
        if kind == "linear":
            W = np.abs(f64(p["W"]))
            b = 0 if p["b"] is None else np.abs(f64(p["b"]))
            K = W.shape[0]
            E = E @ W + R * (K + 2) * (eps * (np.abs(h) @ W + b) + tiny)
        elif kind == "step":
            E = np.where(np.abs(h) <= E, 1.0, 0.0)
        elif kind == "softmax":
            E = np.minimum(1.0, E.max(axis=1, keepdims=True, initial=0)
                           + R * h.shape[1] * (eps * np.abs(a) + tiny))
        elif kind == "log_softmax":
            m = h.max(axis=1, keepdims=True, initial=-np.inf)
            lse = np.log(np.exp(h - m).sum(axis=1, keepdims=True))
            E = 2 * E.max(axis=1, keepdims=True, initial=0) + R * h.shape[1] * (
                eps * (np.abs(h - m) + np.abs(lse) + np.abs(a) + 1) + tiny)
        else:
            E = lipschitz(kind, slope) * E + R * (eps * np.abs(a) + tiny)
        E = np.broadcast_to(E, a.shape).copy()
        bounds.append(E)
    return bounds


def chain_backward_bounds(specs, caches, out, fwd, gy, dt):
    """Reference gradients layer by layer and their error bounds."""
    eps, tiny = EPS[dt], TINY[dt]
    g = f64(gy)
    G = np.zeros(g.shape)
    grad_bounds = {}
    gk = gy
    for i in range(len(specs) - 1, -1, -1):
        kind, p, slope = specs[i]
        h = f64(caches[i])
        Eh = fwd[i - 1] if i else np.zeros(h.shape)
        a = f64(caches[i + 1] if i + 1 < len(caches) else out)
        Ea = fwd[i]
        params = None if kind != "linear" else {"W": p["W"].astype(dt),
                                                "b": None if p["b"] is None else p["b"]}
        gin, grads = ref.layer_backward(kind, gk, caches[i], params, slope)
        gi = f64(gin)
        if kind == "linear":
            W = np.abs(f64(p["W"]))
            N, O = g.shape
            dW_tol = np.abs(h).T @ G + Eh.T @ np.abs(g) + R * (N + 2) * (
                eps * (np.abs(h).T @ np.abs(g)) + tiny)
            db_tol = G.sum(axis=0) + R * (N + 2) * (eps * np.abs(g).sum(axis=0) + tiny)
            grad_bounds[i] = (grads, dW_tol, db_tol)
            G = G @ W.T + R * (O + 2) * (eps * (np.abs(g) @ W.T) + tiny)
        elif kind == "step":
            G = np.zeros(h.shape)
        elif kind == "softmax":
            s = (np.abs(g) * a).sum(axis=1, keepdims=True)
            G = np.abs(a) * (G + (G * a + np.abs(g) * Ea).sum(axis=1, keepdims=True)) + \
                Ea * (np.abs(g) + s) + R * h.shape[1] * (eps * np.abs(a) * (np.abs(g) + s) + tiny)
        elif kind == "log_softmax":
            pr = np.exp(a)
            s = np.abs(g).sum(axis=1, keepdims=True)
            G = G + pr * G.sum(axis=1, keepdims=True) + pr * np.exp(Ea) * Ea * s + \
                R * h.shape[1] * (eps * (np.abs(g) + pr * s) + tiny)
        else:
            deriv = np.abs(f64(ref.activation_derivative(kind, caches[i], slope)))
            G = G * deriv + np.abs(g) * (second(kind, slope) * Eh + 2 * Ea) + \
                R * (eps * (np.abs(gi) + np.abs(g)) + tiny)
            for at, jump in jumps(kind, slope):
                G = G + np.where(np.abs(h - at) <= Eh, jump * np.abs(g), 0)
        g, gk = gi, gin
    return gk, G, grad_bounds


@settings(PROFILE)
@given(case=model_cases(("safe",)))
def test_sequential_matches_reference(case):
    note([(k, s) for k, _, s in case["specs"]])
    dt = case["dtype"]
    model = build_model(case)
    x_in = in_layout(case["x"], case["x_layout"])
    gy_in = in_layout(case["gy"], case["gy_layout"])
    x_eff = np.array(case["x"], dtype=dt)
    specs = [(k, None if p is None else {"W": p["W"].astype(dt),
                                         "b": None if p["b"] is None else p["b"].astype(dt)}, s)
             for k, p, s in case["specs"]]
    out = model.forward(x_in)
    assert out.dtype == dt and out.shape == case["gy"].shape
    with np.errstate(all="ignore"):
        want, caches = ref.sequential_forward(specs, x_eff)
        fwd = chain_bounds(specs, caches, want, dt)
    compare(out, want, fwd[-1], what="Sequential forward")

    model.zero_grad()
    gx = model.backward(gy_in)
    gy_eff = np.array(case["gy"], dtype=dt)
    with np.errstate(all="ignore"):
        gx_want, G, grad_bounds = chain_backward_bounds(specs, caches, want, fwd, gy_eff, dt)
    compare(gx, gx_want, G, what="Sequential backward dx")
    for i, (grads, dW_tol, db_tol) in grad_bounds.items():
        compare(model[i].grads["W"], grads["W"], dW_tol, what=f"layer {i} dW")
        if "b" in grads:
            compare(model[i].grads["b"], grads["b"], db_tol, what=f"layer {i} db")


@settings(PROFILE)
@given(case=model_cases(("extreme", "wild")))
def test_sequential_with_extreme_values_never_crashes(case):
    """Extremes, inf and nan in inputs and parameters: forward, backward,
    train_step and fit return arrays of the right shape or raise
    NonFiniteLossError, which leaves the parameters as they were (fit
    refuses NaN or inf inputs up front with ValueError)."""
    dt = case["dtype"]
    model = build_model(case)
    x_in = in_layout(case["x"], case["x_layout"])
    gy_in = in_layout(case["gy"], case["gy_layout"])
    with np.errstate(all="ignore"):
        out = model.forward(x_in)
        assert out.dtype == dt and out.shape == case["gy"].shape
        gx = model.backward(gy_in)
        assert gx.dtype == dt and gx.shape == x_in.shape
        N = x_in.shape[0]
        if N == 0:
            with pytest.raises(ValueError):
                model.train_step(x_in, case["labels"], class_loss(model),
                                 nl.SGD(model, lr=0.1))
            return
        opt = nl.SGD(model, lr=0.1, momentum=0.5)
        for loss in (class_loss(model), nl.MSE()):
            target = case["labels"] if loss.is_classification else \
                np.asarray(case["gy"])
            before = np.array(model._param_block())
            try:
                v = model.train_step(x_in, target, loss, opt)
            except nl.NonFiniteLossError:
                assert np.array_equal(np.array(model._param_block()), before, equal_nan=True), \
                    "a rejected train_step changed the parameters"
            else:
                assert isinstance(v, float) and math.isfinite(v)
        before = np.array(model._param_block())
        try:
            model.fit(x_in, case["labels"], loss=class_loss(model), optimizer=opt,
                      epochs=2, batch_size=2, verbose=0)
        except nl.NonFiniteLossError:
            pass
        except ValueError as e:   # NaN or inf in x: refused before any update
            assert not np.all(np.isfinite(np.asarray(case["x"]).astype(dt))) and "holds" in str(e)
            assert np.array_equal(np.array(model._param_block()), before, equal_nan=True)
        out2 = model.predict(x_in)
        assert out2.shape == out.shape
