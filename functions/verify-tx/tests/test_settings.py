"""Tier 1: verify-tx's settings from the environment."""

from __future__ import annotations

import pytest

from eventing.settings import SettingsError
from function.func import VerifySettings


def test_given_no_chain_ids_when_read_then_mainnet_only():
    assert VerifySettings.from_env({}).chain_ids == frozenset({1})


def test_given_comma_separated_chain_ids_when_read_then_each_allowed():
    settings = VerifySettings.from_env({"VERIFY_CHAIN_IDS": " 1, 11155111 ,17000"})
    assert settings.chain_ids == frozenset({1, 11155111, 17000})


@pytest.mark.parametrize("value", ["", " , ", "one", "1,-5", "0", str(2**256)])
def test_given_bad_chain_ids_when_read_then_settings_error_names_the_variable(value):
    with pytest.raises(SettingsError, match="VERIFY_CHAIN_IDS"):
        VerifySettings.from_env({"VERIFY_CHAIN_IDS": value})
