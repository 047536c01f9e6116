"""A malformed frame or body is explained in Chinese, naming the field, not in msgspec's English."""

from __future__ import annotations

import re

import pytest

from server import protocol

_LATIN_SENTENCE = re.compile(r"Expected|Object|missing|got")


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ('{"type":"submit","id":"a","diagnosis":"x","differentials":[],"reasoning":"%s"}'
         % ("x" * 5000), "“诊断依据”（reasoning）过长（最多 4000）"),
        ('{"type":"submit","id":"a","differentials":[],"reasoning":""}', "缺少必填字段 diagnosis"),
        ('{"type":"ask","id":"a","text":5}', "“问题”（text）应为文字，收到的是整数"),
        ('{"type":"ask","id":"a","text":"你好","zzz":1}', "包含未知字段 zzz"),
    ],
)
def test_a_bad_frame_is_explained_in_chinese(frame: str, says: str) -> None:
    with pytest.raises(protocol.FrameError) as err:
        protocol.decode_client(frame, 1 << 20)
    assert err.value.code == "bad_message"
    assert says in err.value.message
    assert not _LATIN_SENTENCE.search(err.value.message), err.value.message
    assert "Invalid message" in err.value.message_en  # the English half keeps msgspec's words
