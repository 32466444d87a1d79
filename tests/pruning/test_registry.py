import pytest

from pruning.registry import Registry


def test_entries_by_name_pattern_or_module_attr():
    r: Registry[int] = Registry("widget", "parts.widget")
    r.add("b", 2)
    assert r.register("a")(1) == 1
    assert r.names() == ["a", "b"] and r.names("b*") == ["b"] and "a" in r
    assert r.get("a") == 1
    assert r.get("math:pi") == pytest.approx(3.14159, abs=1e-5)


def test_errors_name_the_key_and_list_what_is_valid():
    r: Registry[int] = Registry("widget", "parts.widget")
    r.add("a", 1)
    with pytest.raises(ValueError, match=r"^parts.widget: unknown widget 'z'; known: a$"):
        r.get("z")
    with pytest.raises(ValueError, match=r"^parts.widget: cannot import 'math:nope'"):
        r.get("math:nope")
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        r.add("a", 2)
    with pytest.raises(ValueError, match="reserved for module:attr"):
        r.add("x:y", 3)
