"""Train the model to harden: Papernot et al.'s MNIST CNN on builtin:mnist, saved as TorchScript.

    python examples/train_mnist_teacher.py --out teacher.pt
    harden run teacher.pt --dataset builtin:mnist --out runs/mnist

A plain T=1 training run (Adam, lr 1e-3, seed 0): this stands in for the user's own classifier.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from core.datasets.references import load_dataset
from core.device import pick_device
from core.intake.zoo import build_zoo_model


def train(epochs: int, batch_size: int, seed: int, device: torch.device) -> torch.nn.Module:
    """Papernot's MNIST net trained at T=1 on builtin:mnist; prints test accuracy per epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = load_dataset("builtin:mnist")
    model = build_zoo_model(
        "papernot_mnist", num_classes=data.num_classes, input_shape=data.input_shape
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for start in range(0, len(x_train), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        print(f"epoch {epoch + 1}/{epochs}: test accuracy {accuracy:.4f}")
    return model.cpu().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the .pt file")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")
    args = parser.parse_args()
    started = time.perf_counter()
    model = train(args.epochs, args.batch_size, args.seed, pick_device(args.device))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream but is the format every torch version still loads.
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), str(args.out))
    print(f"saved {args.out} (TorchScript) in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
