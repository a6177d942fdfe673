"""Shared test set-up: everything offline, small thread count, shared fixtures."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: no test may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
