"""The pending ACME challenges (acme/board.py): the manager's writes, the data plane's reads,
the version and ``on_change`` at every real change, and the whole board as one value that
travels to the workers (msgpack, and the supervisor's ``Challenges`` command)."""

from __future__ import annotations

import msgspec

from a3s_gateway.acme.board import BoardState, ChallengeBoard
from a3s_gateway.supervisor.worker_main import Challenges, decode_command, encode_message

PAIR = (b"-----BEGIN CERTIFICATE-----\ncert\n", b"-----BEGIN PRIVATE KEY-----\nkey\n")
OTHER = (b"-----BEGIN CERTIFICATE-----\nother\n", b"-----BEGIN PRIVATE KEY-----\nother\n")


def watched() -> tuple[ChallengeBoard, list[int]]:
    """A board whose ``on_change`` records the version it sees at each call."""
    board = ChallengeBoard()
    calls: list[int] = []
    board.on_change = lambda: calls.append(board.version)
    return board, calls


def pending(board: ChallengeBoard) -> tuple[bool, bool]:
    """``(has_http, has_alpn)`` read afresh (an ``assert`` on a property would narrow it)."""
    return board.has_http, board.has_alpn


def test_a_new_board_is_empty() -> None:
    board = ChallengeBoard()
    assert pending(board) == (False, False)
    assert board.version == 0
    assert board.http_answer("token") is None
    assert board.alpn_certificate("shop.example.test") is None
    assert board.state() == BoardState()


def test_http_tokens_are_added_answered_and_removed() -> None:
    board, calls = watched()
    board.add_http("tok-1", "tok-1.thumb")
    assert pending(board) == (True, False)
    assert board.http_answer("tok-1") == "tok-1.thumb"
    assert board.http_answer("TOK-1") is None  # tokens are case-sensitive
    board.add_http("tok-2", "tok-2.thumb")
    assert calls == [1, 2]
    board.remove_http("tok-1")
    assert board.http_answer("tok-1") is None
    assert pending(board) == (True, False)
    board.remove_http("tok-2")
    assert pending(board) == (False, False)
    assert calls == [1, 2, 3, 4]
    assert board.version == 4


def test_alpn_certificates_are_keyed_by_the_lower_case_domain() -> None:
    board, calls = watched()
    board.add_alpn("Shop.Example.TEST", PAIR)
    assert pending(board) == (False, True)
    assert board.alpn_certificate("shop.example.test") == PAIR
    assert board.state().alpn == {"shop.example.test": PAIR}
    board.add_alpn("shop.example.test", OTHER)  # the same name again: replaced
    assert board.alpn_certificate("shop.example.test") == OTHER
    assert len(board.state().alpn) == 1
    board.remove_alpn("SHOP.example.test")
    assert pending(board) == (False, False)
    assert board.alpn_certificate("shop.example.test") is None
    assert calls == [1, 2, 3]


def test_a_certificate_is_removed_only_while_it_is_still_the_one_presented() -> None:
    board, calls = watched()
    board.add_alpn("a.example.test", PAIR)
    board.add_alpn("a.example.test", OTHER)  # a newer order for the same name
    board.remove_alpn("a.example.test", PAIR)  # the first order's cleanup: not its one now
    assert board.alpn_certificate("a.example.test") == OTHER
    assert calls == [1, 2]
    board.remove_alpn("A.example.test", OTHER)
    assert pending(board) == (False, False)
    assert calls == [1, 2, 3]
    board.remove_alpn("a.example.test", OTHER)  # gone already
    assert calls == [1, 2, 3]


def test_removing_what_is_absent_changes_nothing() -> None:
    board, calls = watched()
    board.remove_http("never")
    board.remove_alpn("never.example.test")
    assert (board.version, calls) == (0, [])
    board.add_http("tok", "tok.thumb")
    board.remove_http("tok")
    board.remove_http("tok")  # gone already
    board.add_alpn("a.example.test", PAIR)
    board.remove_alpn("a.example.test")
    board.remove_alpn("a.example.test")
    assert board.version == 4
    assert calls == [1, 2, 3, 4]


def test_state_and_replace_round_trip() -> None:
    source = ChallengeBoard()
    source.add_http("tok", "tok.thumb")
    source.add_alpn("a.example.test", PAIR)
    state = source.state()
    assert state == BoardState({"tok": "tok.thumb"}, {"a.example.test": PAIR})
    worker, calls = watched()
    worker.add_http("stale", "stale.thumb")
    worker.replace(state)
    assert worker.state() == state
    assert worker.http_answer("stale") is None  # replaced, not merged
    assert worker.http_answer("tok") == "tok.thumb"
    assert worker.alpn_certificate("a.example.test") == PAIR
    assert calls == [1, 2]  # the replace is one change
    worker.replace(BoardState())
    assert pending(worker) == (False, False)
    assert calls == [1, 2, 3]


def test_state_is_a_copy() -> None:
    board = ChallengeBoard()
    board.add_http("tok", "tok.thumb")
    state = board.state()
    board.add_http("later", "later.thumb")
    board.remove_http("tok")
    assert state.http == {"tok": "tok.thumb"}
    other = ChallengeBoard()
    other.replace(state)
    other.add_http("more", "more.thumb")
    assert state.http == {"tok": "tok.thumb"}  # the worker's board does not share the dict


def test_board_state_survives_msgpack() -> None:
    state = BoardState({"tok": "tok.thumb", "t2": "t2.thumb"}, {"a.example.test": PAIR})
    data = msgspec.msgpack.encode(state)
    decoded = msgspec.msgpack.decode(data, type=BoardState)
    assert decoded == state
    certificate = decoded.alpn["a.example.test"]
    assert isinstance(certificate, tuple)
    assert all(isinstance(part, bytes) for part in certificate)
    empty = msgspec.msgpack.decode(msgspec.msgpack.encode(BoardState()), type=BoardState)
    assert empty == BoardState()


def test_the_challenges_command_round_trips_to_a_worker() -> None:
    board = ChallengeBoard()
    board.add_http("tok", "tok.thumb")
    board.add_alpn("a.example.test", PAIR)
    command = decode_command(encode_message(Challenges(board.state())))
    assert isinstance(command, Challenges)
    assert command == Challenges(board.state())
    worker = ChallengeBoard()
    worker.replace(command.state)
    assert worker.http_answer("tok") == "tok.thumb"
    assert worker.alpn_certificate("a.example.test") == PAIR
