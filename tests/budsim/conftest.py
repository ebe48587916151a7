import pytest

from budsim.catalog import get_model


@pytest.fixture(scope="session")
def llama70b():
    return get_model("meta-llama/Llama-3.1-70B-Instruct")


@pytest.fixture(scope="session")
def llama8b():
    return get_model("meta-llama/Llama-3.1-8B-Instruct")
