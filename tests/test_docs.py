"""The docstring examples in the library are runnable and right."""

import doctest
import importlib

import pytest

MODULES = ["atomic", "classes", "metrics", "runs", "checkpoints", "synthetic", "data", "model", "photos", "visuals",
           "inference", "training", "segmentation", "launcher", "export", "folding", "matting"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"petseg.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
