"""The chat server's process set-up: what start-up leaves behind is kept out of the garbage
collector's full collections (they walked ~400k objects, 200-400 ms with the GIL held)."""

from __future__ import annotations

import gc

from serving.app import freeze_startup_objects


def test_startup_objects_are_frozen_out_of_full_collections() -> None:
    startup_state = [[n] for n in range(200_000)]  # long-lived, like a loaded model's
    assert any(o is startup_state for o in gc.get_objects())
    try:
        frozen = freeze_startup_objects()
        assert frozen >= len(startup_state)
        assert gc.get_freeze_count() == frozen
        assert not any(o is startup_state for o in gc.get_objects())  # no longer walked
        request_garbage = [[n] for n in range(1000)]  # what requests allocate is still collected
        assert any(o is request_garbage for o in gc.get_objects())
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
    assert gc.get_freeze_count() == 0
    assert any(o is startup_state for o in gc.get_objects())
