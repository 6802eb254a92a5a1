"""``python -m nnlayers``: a small end-to-end demo.

Generates interleaved spirals, trains a 2-64-64-C ReLU network with SGD
(momentum 0.9) through ``Sequential.fit`` (with its progress bar), and
prints the train and test accuracy. Needs only NumPy and tqdm.
"""
import argparse
import sys
import time

import numpy as np


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m nnlayers",
        description="Train a small MLP on generated spirals and report its accuracy.")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the data, the initialisation and the shuffling (default 0)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no configuration banner")
    p.add_argument("--classes", type=int, default=2, help="number of spiral arms (default 2)")
    p.add_argument("--samples", type=int, default=2000, help="number of points (default 2000)")
    p.add_argument("--hidden", type=int, default=64, help="width of both hidden layers (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.epochs < 0:
        raise SystemExit("error: --epochs must be >= 0")
    if args.classes < 2:
        raise SystemExit("error: --classes must be >= 2")
    if args.samples < 2 * args.classes:
        raise SystemExit("error: --samples is too small for a train/test split")

    import nnlayers as nl
    from nnlayers.datasets import make_spirals, train_test_split

    X, y = make_spirals(args.samples, n_classes=args.classes, seed=args.seed)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=args.seed)

    h, c = args.hidden, args.classes
    model = nl.Sequential(
        nl.Linear(2, h, seed=args.seed), nl.ReLU(),
        nl.Linear(h, h, seed=args.seed + 1), nl.ReLU(),
        nl.Linear(h, c, seed=args.seed + 2),
    )
    loss = nl.SoftmaxCrossEntropy()
    opt = nl.SGD(model, lr=args.lr, momentum=0.9)
    if not args.quiet:
        print(f"nnlayers {nl.__version__}: {len(X_train)} training / {len(X_test)} test points, "
              f"{c} spiral arms")
        print(f"model 2-{h}-{h}-{c} (ReLU), {model.num_parameters()} parameters; "
              f"SGD lr={args.lr} momentum=0.9, batch {args.batch_size}, {args.epochs} epochs")
        sys.stdout.flush()

    t0 = time.perf_counter()
    model.fit(X_train, y_train, loss=loss, optimizer=opt, epochs=args.epochs,
              batch_size=args.batch_size, seed=args.seed, verbose=0 if args.quiet else 1)
    seconds = time.perf_counter() - t0

    train_acc = model.evaluate(X_train, y_train, loss)["accuracy"]
    test_acc = model.evaluate(X_test, y_test, loss)["accuracy"]
    print(f"train accuracy: {train_acc:.4f}")
    print(f"test accuracy:  {test_acc:.4f}")
    if not args.quiet:
        print(f"training time:  {seconds:.2f} s")
    return 0 if np.isfinite(test_acc) else 1


if __name__ == "__main__":
    sys.exit(main())
