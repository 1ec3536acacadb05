"""The state machine, as a table."""

import pytest

from ks.core import states
from ks.core.errors import Conflict, InvalidState


@pytest.mark.parametrize(
    "text, chain",
    [
        ("new", ("new",)),
        ("image1", ("image1",)),
        ("wipe,image1", ("wipe", "image1")),
        (" wipe , image1 ", ("wipe", "image1")),
        ("discover,new", ("discover", "new")),
        ("a.b_c-1,finished", ("a.b_c-1", "finished")),
    ],
)
def test_parse_chain(text, chain):
    assert states.parse_chain(text) == chain
    assert states.parse_chain(states.format_chain(chain)) == chain


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "required"),
        ("wipe,,image1", "empty state"),
        ("wipe,", "empty state"),
        ("-bad", "not a valid state name"),
        ("../etc", "not a valid state name"),
        ("a b", "not a valid state name"),
        ("x" * 65, "not a valid state name"),
        ("new,image1", "only be the last"),
        ("finished,image1", "only be the last"),
        (",".join(["a"] * 17), "at most 16"),
        ("ima\nge", "not a valid state name"),
    ],
)
def test_parse_chain_refuses(text, message):
    with pytest.raises(InvalidState, match=message):
        states.parse_chain(text)


@pytest.mark.parametrize(
    "chain, after",
    [
        (("wipe", "image1"), ("image1",)),
        (("image1",), ("finished",)),
        (("discover", "new"), ("new",)),
        (("a", "b", "finished"), ("b", "finished")),
    ],
)
def test_after_finish(chain, after):
    assert states.after_finish(chain) == after


@pytest.mark.parametrize("chain", [("new",), ("finished",)])
def test_nothing_to_finish(chain):
    with pytest.raises(Conflict, match="nothing to finish"):
        states.after_finish(chain)


def test_unknown_images_refused_with_the_known_ones():
    with pytest.raises(InvalidState, match="unknown image 'image2'; known images: image1, wipe"):
        states.check_known(("wipe", "image2"), {"wipe": "", "image1": ""})
    states.check_known(("wipe", "image2"), {"wipe": ""}, force=True)
    states.check_known(("new",), {})


def test_images_that_cannot_boot_are_refused_like_unknown_ones():
    broken = {"wipe": "", "broken": "images/broken/ has no kernel"}
    with pytest.raises(InvalidState, match=r"image 'broken' cannot boot: images/broken/ has no kernel "
                                           r"\(use --force to set it anyway\)"):
        states.check_known(("wipe", "broken"), broken)
    states.check_known(("wipe", "broken"), broken, force=True)
