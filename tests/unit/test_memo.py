from tenantgate.memo import remember


def test_a_memo_below_its_bound_keeps_every_entry() -> None:
    memo: dict[str, int] = {}
    assert [remember(memo, k, v, 3) for k, v in (("a", 1), ("b", 2), ("c", 3))] == [1, 2, 3]
    assert memo == {"a": 1, "b": 2, "c": 3}


def test_a_full_memo_is_emptied_before_the_next_entry() -> None:
    memo = {"a": 1, "b": 2, "c": 3}
    assert remember(memo, "d", 4, 3) == 4
    assert memo == {"d": 4}
