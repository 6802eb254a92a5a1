"""PyTorch CPU peer (optional): same MLP with torch.nn / F.cross_entropy / optim.SGD
(or optim.Adam)."""

import numpy as np


def load_torch():
    """Return (torch module, None) or (None, reason)."""
    try:
        import torch  # noqa: F401
        import torch.nn.functional  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from a broken install
        return None, f"{type(exc).__name__}: {exc}"
    return torch, None


class TorchMLP:
    def __init__(self, torch, sizes, lr=0.01, seed=0, optimizer="sgd"):
        self.torch = torch
        self.F = torch.nn.functional
        torch.manual_seed(seed)
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                layers.append(torch.nn.ReLU())
            layers.append(torch.nn.Linear(a, b, dtype=torch.float32))
        self.model = torch.nn.Sequential(*layers)
        if optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.linears = [m for m in self.model if isinstance(m, torch.nn.Linear)]

    def set_params(self, Ws, bs):
        """Copy weights in; Ws given as (in, out) like nnlayers/NumPy."""
        with self.torch.no_grad():
            for lin, W, b in zip(self.linears, Ws, bs):
                lin.weight.copy_(self.torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(self.torch.from_numpy(np.asarray(b)))

    def get_params(self):
        Ws = [lin.weight.detach().numpy().T.copy() for lin in self.linears]
        bs = [lin.bias.detach().numpy().copy() for lin in self.linears]
        return Ws, bs

    def step_fn(self, x, y):
        """Return a no-arg callable doing one training step on tensors made from x, y."""
        xt = self.torch.from_numpy(x)
        yt = self.torch.from_numpy(y)
        model, opt, ce = self.model, self.opt, self.F.cross_entropy

        def step():
            opt.zero_grad(set_to_none=True)
            loss = ce(model(xt), yt)
            loss.backward()
            opt.step()
            return loss

        return step

    def predict_fn(self, x):
        """No-arg forward callable; call it inside torch.inference_mode()."""
        xt = self.torch.from_numpy(x)
        model = self.model
        return lambda: model(xt)
