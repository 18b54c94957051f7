"""Model versions reach SQL text (Delta's replaceWhere, deletes): only versions of a strict form get there."""
from __future__ import annotations

import pytest

from flow.model_runs import MODEL_VERSION_PATTERN, BadModelVersionError, checked_version, new_model_version, \
    version_predicate


@pytest.mark.parametrize("bad", ["nope\\' OR 1=1 --", "v1' OR '1'='1", "v1 -- comment", "v1/*x*/", "v1;DROP",
                                 "", " v1", "v1\n", "../v1", "a" * 129, "é", None])
def test_versions_with_quotes_comments_or_odd_characters_are_refused(bad):
    with pytest.raises(BadModelVersionError, match="is not of the form"):
        version_predicate(bad)


@pytest.mark.parametrize("good", ["20261201T153825Z", "itest-v1", "cluster-v1", "m1", "v1.2_rc:3", "a" * 128])
def test_plain_versions_make_an_equality_predicate(good):
    assert version_predicate(good) == f"model_version = '{good}'"
    assert checked_version(good) == good


def test_the_default_version_passes_its_own_check():
    assert MODEL_VERSION_PATTERN.fullmatch(new_model_version())
