"""The cloner's forward / copy / refuse decision (clone_streaming.send_method), the table in
the README, row by row."""
from __future__ import annotations

import pytest

from clone_streaming import COPY_MODES, send_method


@pytest.mark.parametrize("mode", COPY_MODES)
@pytest.mark.parametrize("reply", [False, True])
def test_protected_content_is_reuploaded_or_refused_in_every_mode(mode: str,
                                                                  reply: bool) -> None:
    assert send_method(mode, protected=True, reply=reply, allow_reupload=True) == "copy"
    assert send_method(mode, protected=True, reply=reply, allow_reupload=False) == "refuse"


@pytest.mark.parametrize(("mode", "reply", "method"), [
    ("forward", False, "forward"),
    ("forward", True, "forward"),       # the reply link is lost: what forward mode means
    ("copy", False, "copy"),
    ("copy", True, "copy"),
    ("auto", False, "forward"),         # posts, topic posts included (top_msg_id places them)
    ("auto", True, "copy"),             # a forward would lose the reply link
])
def test_each_mode_forwards_or_copies(mode: str, reply: bool, method: str) -> None:
    for allow_reupload in (False, True):
        assert send_method(mode, protected=False, reply=reply,
                           allow_reupload=allow_reupload) == method
