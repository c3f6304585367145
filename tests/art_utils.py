"""Wrap a model as an ART PyTorchClassifier for cross-checks."""

from __future__ import annotations

from torch import nn


def art_classifier(model: nn.Module, input_shape: tuple[int, ...] = (1, 8, 8), classes: int = 10):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
