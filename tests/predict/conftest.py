"""The predict tests' tiny trained diffusion model (`trained_phantom.trained_trial`)."""

import pytest
from diffseg3d.predict.model_source import load_model

from .trained_phantom import trained_trial


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    return trained_trial(tmp_path_factory)


@pytest.fixture(scope="module")
def model(trial):
    return load_model(trial["workdir"])
