"""Shared test helpers."""

from __future__ import annotations

import pytest

from snntorch_weighted import reference


@pytest.fixture
def manifest_test_split():
    """``split(recipe, manifest)``: the test split the manifest was measured on, or a skip when
    the dataset is absent or differs from the manifest's (its sha256)."""

    def split(recipe: reference.Recipe, manifest: dict):
        try:
            test = reference.load_split(recipe, "test")
        except FileNotFoundError as err:
            pytest.skip(f"{recipe.dataset} test set not available: {err}")
        if reference.dataset_sha256(test) != manifest["dataset_sha256"]["test"]:
            pytest.skip(f"this {recipe.dataset} test set differs from the one of the manifest")
        return test

    return split
