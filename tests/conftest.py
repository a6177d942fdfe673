"""Shared test set-up: everything offline, small thread count, shared fixtures."""

from __future__ import annotations

import os

import pytest

# Before anything imports huggingface_hub: no test may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ["tests.postgres"]  # postgres_url, fresh_postgres_url: a real PostgreSQL


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> list:
    """Two small but real diffusers models made by our own training script.

    They are quick runs of the v1 and v2 recipes (a few steps each, different
    seeds): real AutoencoderKL/UNet/CLIP weights in diffusers layout, loaded
    through from_pretrained(path) like any checkpoint. Attack mechanics (budgets,
    determinism, masks, ensembles) hold on any model, so tests use these rather
    than depending on the bundled weights' quality.
    """
    from photoimmune.sdk.models.train_tiny import RELEASES, quick_config, train_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    paths = []
    for version in (1, 2):
        out = root / f"quick-{version}"
        train_tiny(quick_config(RELEASES[version]), out)
        paths.append(out)
    return paths


@pytest.fixture(autouse=True)
def _private_key_dir(tmp_path, monkeypatch):
    """Signing keys created by a test land in its own folder, never in the user's home."""
    monkeypatch.setenv("PHOTOIMMUNE_KEY_DIR", str(tmp_path / "keys"))
