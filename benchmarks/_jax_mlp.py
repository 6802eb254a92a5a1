"""JAX peer (optional): the same MLP as a pure function, with ``jax.jit`` of
the whole training step (forward, softmax cross-entropy, gradient, SGD
update) and of predict.

W is stored (in, out) as in nnlayers and the NumPy reference. Each timed
call waits for its result (``block_until_ready``): JAX dispatches
asynchronously, and a step is done only when its new parameters exist.
"""

import os

import numpy as np


def load_jax(threads):
    """Return (jax module, None) or (None, reason). Call before anything
    else imports jax: with threads == 1, XLA's CPU thread pool is turned
    off (its flags are read at import)."""
    if threads == 1 and "jax" not in __import__("sys").modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1").strip()
    try:
        import jax
        import jax.numpy  # noqa: F401
        jax.config.update("jax_platforms", "cpu")
    except Exception as exc:  # ImportError, or a broken install
        return None, f"{type(exc).__name__}: {exc}"
    return jax, None


class JaxMLP:
    """Linear/ReLU stack, softmax cross-entropy (mean over the batch), SGD."""

    def __init__(self, jax, sizes, lr=0.01, seed=0):
        self.jax = jax
        jnp = jax.numpy
        rng = np.random.default_rng(seed)
        params = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = rng.standard_normal((a, b), dtype=np.float32) * np.float32(np.sqrt(2.0 / a))
            params.append((jnp.asarray(w), jnp.zeros(b, dtype=jnp.float32)))
        self.params = params
        lr = np.float32(lr)

        def forward(params, x):
            h = x
            for i, (W, b) in enumerate(params):
                h = h @ W + b
                if i < len(params) - 1:
                    h = jax.nn.relu(h)
            return h

        def loss_fn(params, x, y):
            logp = jax.nn.log_softmax(forward(params, x), axis=1)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

        def step(params, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            new = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
            return new, loss

        # the old parameters' buffers are reused for the new ones
        self._step = jax.jit(step, donate_argnums=0)
        self._predict = jax.jit(forward)

    def set_params(self, Ws, bs):
        jnp = self.jax.numpy
        self.params = [(jnp.asarray(np.array(W, dtype=np.float32)),
                        jnp.asarray(np.array(b, dtype=np.float32))) for W, b in zip(Ws, bs)]

    def get_params(self):
        return ([np.array(W) for W, _ in self.params], [np.array(b) for _, b in self.params])

    def step_fn(self, x, y):
        """A no-arg callable doing one training step; returns the loss."""
        jnp = self.jax.numpy
        xj, yj = jnp.asarray(x), jnp.asarray(y.astype(np.int32))

        def step():
            self.params, loss = self._step(self.params, xj, yj)
            return self.jax.block_until_ready((self.params, loss))[1]

        return step

    def predict_fn(self, x):
        xj = self.jax.numpy.asarray(x)
        return lambda: self._predict(self.params, xj).block_until_ready()
