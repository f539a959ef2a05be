"""The fuzz corpus, replayed through every harness's invariants on each test run.

``tests/fuzz/corpus/<harness>/`` holds the seeds (RFC examples, the smuggling
sequences; written by ``tests/fuzz/seeds.py``) and every crash input a fuzz
run has found (``crash-*``, kept as regression cases).  The long,
coverage-guided runs are ``python3 tests/fuzz/run.py``; this module makes
sure no stored input ever fails again, in well under a second.
"""

from pathlib import Path

import pytest
from fuzz import harnesses, seeds
from hypothesis import given, settings
from hypothesis import strategies as st

CORPUS = Path(harnesses.__file__).resolve().parent / "corpus"


def corpus_files():
    return [(harness, path) for harness in sorted(harnesses.HARNESSES)
            for path in sorted((CORPUS / harness).iterdir())]


@pytest.mark.parametrize("harness, path", corpus_files(),
                         ids=lambda value: value if isinstance(value, str) else value.name)
def test_corpus_input_keeps_every_invariant(harness, path):
    harnesses.HARNESSES[harness](path.read_bytes())


def test_every_harness_has_a_seed_corpus():
    for harness in harnesses.HARNESSES:
        assert len(list((CORPUS / harness).glob("seed-*"))) >= 10, harness


def test_seed_files_match_seeds_py():
    """Run ``python3 tests/fuzz/seeds.py`` after editing the seed list."""
    for harness, inputs in seeds.seeds().items():
        on_disk = {path.name[len("seed-"):]: path.read_bytes()
                   for path in (CORPUS / harness).glob("seed-*")}
        assert on_disk == inputs, harness


def test_smuggling_sequences_are_seeds():
    """SEC Consult 2023-12 (CVE-2023-51764/51765/51766): all twelve, in both bare_eol modes."""
    names = [path.name for path in (CORPUS / "data").glob("seed-smuggling-*")]
    assert len(names) == 2 * 12


# -- the harnesses find what they claim to find --------------------------------------

def test_data_harness_catches_a_wrong_terminator(monkeypatch):
    """The reference model is not vacuous: an assembler that ends at LF.LF fails it."""
    monkeypatch.setattr(harnesses.data, "TERMINATOR", b"\n.\n")
    with pytest.raises(AssertionError):
        harnesses.check_data(seeds.DATA["smuggling-01-normalize"])


def test_proxy_harness_checks_the_bounds(monkeypatch):
    """A parser that always asks for more data breaks the documented bound."""
    monkeypatch.setattr(harnesses.proxy, "parse_proxy_header", lambda buffer: None)
    with pytest.raises(AssertionError, match="undecided"):
        harnesses.check_proxy(seeds.PROXY["v1-no-crlf"])


# -- a quick structured search of the DATA assembler in the normal suite --------------

_DATA_PIECES = st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"\r\n.\r\n", b"x", b"yy",
                                b"\x00", b"z" * 7])


@settings(max_examples=300, deadline=None)
@given(flags=st.integers(0, 255), limit=st.integers(0, 255), size=st.integers(0, 255),
       seed=st.integers(0, 255), pieces=st.lists(_DATA_PIECES, max_size=40))
def test_data_assembler_against_model(flags, limit, size, seed, pieces):
    harnesses.check_data(bytes([flags, limit, size, seed]) + b"".join(pieces))
