"""Ensemble's input guards: bad members or weights are the caller's to fix (InputError)."""

from __future__ import annotations

import pytest
import torch

from photoimmune.sdk.attacks import Ensemble
from photoimmune.sdk.attacks.base import Attack
from photoimmune.sdk.errors import InputError


class Flat(Attack):
    """A member that needs no model: the guards run before any loss."""

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def test_an_ensemble_without_members_is_refused_saying_what_to_pass():
    with pytest.raises(InputError, match="at least one member attack: pass one attack per"):
        Ensemble([])


@pytest.mark.parametrize("weights", [[1.0], [1.0, 2.0, 3.0], [1.0, -1.0], [0.0, 0.0]])
def test_weights_that_do_not_fit_the_members_are_refused(weights):
    with pytest.raises(InputError, match=r"one non-negative weight per member \(2\)"):
        Ensemble([Flat(), Flat()], weights)


def test_weights_are_normalised_and_default_to_equal():
    assert Ensemble([Flat(), Flat()]).weights == [0.5, 0.5]
    assert Ensemble([Flat(), Flat()], [3.0, 1.0]).weights == [0.75, 0.25]
