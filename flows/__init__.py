"""Prefect flows and deployments over the layers; REPO_ROOT is the checkout they run from."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
