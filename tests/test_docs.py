"""The docstring examples in the library are runnable and right."""

import doctest
import importlib
from pathlib import Path

import pytest

# Every module of the package, so that a new one is checked without being listed here.
MODULES = sorted(path.stem for path in (Path(__file__).resolve().parent.parent / "petseg").glob("*.py")
                 if path.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"petseg.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
