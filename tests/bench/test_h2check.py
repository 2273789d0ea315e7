"""``bench.harness.h2check.judge``: what makes an HTTP/2 check answer good or not."""

from __future__ import annotations

from bench.harness.h2check import Answer, judge
from bench.harness.nginx import BODY_42, GRPC_FRAME


def _answer(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    trailers: dict[str, str] | None = None,
) -> Answer:
    return Answer(
        status=status,
        headers={":status": str(status), **(headers or {})},
        body=bytearray(body),
        trailers=trailers or {},
        ended=True,
    )


GRPC_OK = {"content-type": "application/grpc"}


def test_a_get_needs_200_and_the_body_size() -> None:
    assert judge(_answer(200, BODY_42.encode()), size=42) is None
    assert "answered 502" in (judge(_answer(502, b"bad gateway"), size=42) or "")
    assert "with 3 bytes (expected 42)" in (judge(_answer(200, b"abc"), size=42) or "")


def test_a_grpc_success() -> None:
    answer = _answer(200, GRPC_FRAME, GRPC_OK, {"grpc-status": "0"})
    assert judge(answer, size=49, grpc_body=GRPC_FRAME) is None


def test_a_grpc_error_says_its_status_first() -> None:
    # The gateway's errors are trailers-only: the status is in the headers, there is no body.
    answer = _answer(200, b"", {**GRPC_OK, "grpc-status": "14", "grpc-message": "no backend"})
    reason = judge(answer, size=49, grpc_body=GRPC_FRAME) or ""
    assert "grpc-status '14'" in reason
    assert "'no backend'" in reason


def test_a_grpc_answer_needs_the_trailer_and_the_content_type() -> None:
    missing = _answer(200, GRPC_FRAME, GRPC_OK)
    assert "grpc-status None" in (judge(missing, size=49, grpc_body=GRPC_FRAME) or "")
    plain = _answer(200, GRPC_FRAME, {"content-type": "text/plain"}, {"grpc-status": "0"})
    assert "content-type 'text/plain'" in (judge(plain, size=49, grpc_body=GRPC_FRAME) or "")


def test_a_grpc_answer_needs_the_message() -> None:
    other = GRPC_FRAME[:-1] + b"?"
    answer = _answer(200, other, GRPC_OK, {"grpc-status": "0"})
    assert "another gRPC message" in (judge(answer, size=49, grpc_body=GRPC_FRAME) or "")
