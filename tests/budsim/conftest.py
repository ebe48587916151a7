from pathlib import Path

import pytest

from budsim.catalog import get_model

# A few dozen measured rows (tests/budsim/fixtures/README.md): the tests never read the full data set.
SILICON_FIXTURE = Path(__file__).parent / "fixtures" / "silicon_sample.csv"


@pytest.fixture(scope="session")
def silicon_fixture() -> Path:
    return SILICON_FIXTURE


@pytest.fixture(scope="session")
def llama70b():
    return get_model("meta-llama/Llama-3.1-70B-Instruct")


@pytest.fixture(scope="session")
def llama8b():
    return get_model("meta-llama/Llama-3.1-8B-Instruct")
