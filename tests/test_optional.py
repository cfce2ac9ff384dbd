"""Optional packages: one message form naming the package and the extra to install."""

from __future__ import annotations

import pytest

from defr import optional
from defr.errors import DefrError


def test_present_module_is_returned():
    assert optional.require("json", "reading", None).dumps([1]) == "[1]"


def test_missing_module_names_package_and_extra():
    with pytest.raises(optional.MissingDependency, match=r"serving needs the Python package 'defr_no_such_pkg'") as e:
        optional.require("defr_no_such_pkg.sub", "serving", "serve")
    assert 'pip install "defr[serve]"' in str(e.value)
    assert isinstance(e.value, DefrError) and isinstance(e.value, ImportError)


def test_missing_module_outside_extras_names_pip_package():
    with pytest.raises(optional.MissingDependency, match="pip install ultra_nothing"):
        optional.require("ultra_nothing", "a detector", None)
