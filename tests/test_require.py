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
    """A module that cannot be imported (None in sys.modules makes import raise ImportError):
    torch, the first one `monai` needs, so the outcome is the same whether or not the `test`
    extra is installed."""
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="monai is required in CI.*cannot import torch"):
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


def test_in_ci_a_skip_naming_a_required_piece_fails_and_others_still_skip(pytester, monkeypatch):
    """A `skipif`/`importorskip` written without `require` (reason naming pdflatex, PostgreSQL,
    MONAI or torch) is a failure in CI; a skip for anything else (no GPU) stays a skip."""
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.skipif(True, reason='pdflatex not installed')\n"
        "def test_latex():\n    pass\n"
        "@pytest.mark.skipif(True, reason='no GPU here')\n"
        "def test_gpu():\n    pass\n"
    )
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(errors=1, skipped=1)
    result.stdout.fnmatch_lines(["*skipped in CI, where it must run*pdflatex not installed*"])
    monkeypatch.delenv("CI")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(skipped=2)
