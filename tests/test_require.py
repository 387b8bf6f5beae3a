"""tests/conftest.py `require`: in CI a missing pdflatex, PostgreSQL, torch/MONAI or Ray fails the
test naming it; elsewhere the test skips saying how to install it."""

import pytest

from tests.conftest import require


@pytest.fixture
def no_pdflatex(tmp_path, monkeypatch):
    """A PATH with no pdflatex on it (an empty folder)."""
    monkeypatch.setenv("PATH", str(tmp_path))


def test_missing_pdflatex_fails_in_ci_naming_it(no_pdflatex, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="pdflatex is required in CI and missing"):
        require("pdflatex")


def test_missing_pdflatex_skips_outside_ci_with_the_install_command(no_pdflatex, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install texlive-latex-recommended"):
        require("pdflatex")


def test_missing_postgresql_fails_in_ci(no_pdflatex, monkeypatch):
    """No initdb on PATH and none in Debian's /usr/lib/postgresql/<major>/bin."""
    import glob

    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="postgresql is required in CI.*initdb"):
        require("postgresql")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        require("postgresql")


def test_a_missing_module_names_it(monkeypatch):
    """A module that cannot be imported (None in sys.modules makes import raise ImportError)."""
    monkeypatch.setitem(__import__("sys").modules, "monai.metrics", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="monai is required in CI.*monai.metrics"):
        require("monai")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match=r'pip install -e "\.\[test\]"'):
        require("monai")


def test_present_requirements_pass_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.setenv("CI", "true")
    require("ray")  # a dependency of the project: always installed with it
    with pytest.raises(ValueError, match="unknown requirement 'latex'"):
        require("latex")


@pytest.mark.requires("ray")
def test_the_marker_runs_require_before_the_test():
    import ray

    assert ray.__version__
