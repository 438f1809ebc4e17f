"""The feed's tests (issue 21): API clients of a recipient and of a sender."""

import pytest


@pytest.fixture
def alice_api(alice, client_for):
    return client_for(alice)


@pytest.fixture
def sender_api(service_account, client_for):
    return client_for(service_account, raise_exceptions=False)
