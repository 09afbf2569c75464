import pytest

from relay.core.ladder import (
    PAUSED,
    SOURCE,
    STILL,
    LadderError,
    Layer,
    Rendition,
    check_cap,
    layer_names,
    layers,
    parse_ladder,
)

LADDER = parse_ladder("640x360@500,320x180@150", still_fps=2.0)


def test_default_ladder_parses_highest_first_with_a_still_tier() -> None:
    assert (
        Rendition("360p", 640, 360, 500_000),
        Rendition("180p", 320, 180, 150_000),
        Rendition(STILL, 320, 180, 50_000, 2.0),
    ) == LADDER
    assert layer_names(LADDER) == (SOURCE, "360p", "180p", "low", "audio")


def test_empty_ladder_means_source_only() -> None:
    assert parse_ladder("", still_fps=2.0) == ()
    assert layers(1_500_000, (), screen=True, cap=None) == (
        Layer(SOURCE, 1_500_000),
        Layer(PAUSED, 0),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("640x360", "is not WIDTHxHEIGHT@KBITS"),
        ("640x360@500,640x360@300", "two rungs of the same height"),
        ("320x180@150,640x360@500", "highest to lowest"),
        ("641x360@500", "even, non-zero"),
        ("0x0@5", "even, non-zero"),
    ],
)
def test_bad_ladders_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(LadderError, match=message):
        parse_ladder(text, still_fps=2.0)


@pytest.mark.parametrize(
    ("source", "screen", "cap", "names"),
    [
        (1_500_000, False, None, [SOURCE, "360p", "180p", PAUSED]),
        (1_500_000, True, None, [SOURCE, "360p", "180p", STILL]),
        # renditions at or above the teacher's own bitrate are pointless
        (400_000, False, None, [SOURCE, "180p", PAUSED]),
        (1_500_000, False, "360p", ["360p", "180p", PAUSED]),
        (400_000, False, "360p", [SOURCE, "180p", PAUSED]),
        (1_500_000, True, "low", ["180p", STILL]),
        (1_500_000, True, "audio", [PAUSED]),
    ],
)
def test_layers_follow_source_rate_kind_and_cap(
    source: int, screen: bool, cap: str | None, names: list[str]
) -> None:
    assert [layer.name for layer in layers(source, LADDER, screen, cap)] == names


def test_caps_are_checked_against_the_ladder() -> None:
    assert check_cap(None, LADDER) is None
    assert check_cap("source", LADDER) is None
    assert check_cap("180p", LADDER) == "180p"
    with pytest.raises(LadderError, match="unknown quality cap '720p'"):
        check_cap("720p", LADDER)
