"""Annotations and unknown keywords are ignored in every draft; object keywords; regression tests of issue 20."""

from __future__ import annotations

import json

import pytest
from realizar_ort.kernels.token_mask import advance_token_bytes_reference

from realizar_ort.grammar.json_schema import (
    GrammarError,
    UnsupportedSchemaError,
    compile_schema_automaton,
)


def accepts(schema, value, **kw) -> bool:
    a = compile_schema_automaton(schema, **kw)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    r = advance_token_bytes_reference((*a.arrays, a.plain_loop, a.loop_bits, a.free_string), text.encode("utf-8"),
                                      a.start, 0, [], 64)
    return r is not None and not r[2] and bool(a.final[r[0]])


# one schema per draft, each with the annotations (and vendor keywords) real schemas of that draft carry
DRAFTS = {
    "draft-03": {"$schema": "http://json-schema.org/draft-03/schema#", "id": "http://x/a", "title": "T",
                 "type": "object", "properties": {"n": {"type": "integer", "description": "d", "javaType": "Long"}},
                 "additionalProperties": False},
    "draft-04": {"$schema": "http://json-schema.org/draft-04/schema#", "id": "http://x/a#", "self": {"vendor": "x"},
                 "type": "object", "properties": {"n": {"type": "integer", "_format": "int", "readonly": True}},
                 "additionalProperties": False, "x-kubernetes-preserve-unknown-fields": True},
    "draft-06": {"$schema": "http://json-schema.org/draft-06/schema#", "$id": "http://x/a", "examples": [{}],
                 "type": "object", "properties": {"n": {"type": "integer", "default": 1, "_uniqueItems": True}},
                 "additionalProperties": False},
    "draft-07": {"$schema": "http://json-schema.org/draft-07/schema#", "$comment": "c", "readOnly": True,
                 "type": "object", "properties": {"n": {"type": "integer", "writeOnly": False,
                                                        "markdownDescription": "m"}},
                 "additionalProperties": False, "preferredOrder": ["n"]},
    "draft2019-09": {"$schema": "https://json-schema.org/draft/2019-09/schema", "$anchor": "a", "deprecated": True,
                     "type": "object", "properties": {"n": {"type": "integer", "contentMediaType": "text/plain"}},
                     "additionalProperties": False, "$recursiveAnchor": True},
    "draft2020-12": {"$schema": "https://json-schema.org/draft/2020-12/schema", "$dynamicAnchor": "m",
                     "type": "object", "properties": {"n": {"type": "integer", "x-order": 1, "example": 3}},
                     "additionalProperties": False, "someFutureAnnotation": {"type": "string"}},
}


@pytest.mark.parametrize("draft", list(DRAFTS))
def test_annotations_and_unknown_keywords_are_ignored(draft):
    schema = DRAFTS[draft]
    assert accepts(schema, {"n": 3}) and accepts(schema, {})
    assert not accepts(schema, {"n": "3"}) and not accepts(schema, {"m": 1})


def test_unknown_keyword_does_not_hide_a_refused_assertion():
    with pytest.raises(UnsupportedSchemaError) as err:
        compile_schema_automaton({"x-vendor": 1, "type": "object", "if": {"minProperties": 3}, "then": {}})
    assert err.value.keyword == "if"
    assert accepts({"then": {"type": "string"}, "else": False}, 5)  # then/else without if: ignored


def test_additional_properties_absent_allows_extra_keys_after_listed_ones():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert accepts(schema, {"a": 1, "$schema": "x", "b ": [1]})
    assert not accepts(schema, {"a": "x"}) and not accepts(schema, {"b": 1})
    assert not accepts(schema, {"a": 1, "z": 2}, strict=True)
    assert not accepts(schema, '{"a":1,"a":2}')  # a listed name never comes back as an extra key


def test_not_of_types():
    assert accepts({"not": {"type": "string"}}, 5) and not accepts({"not": {"type": "string"}}, "s")
    assert accepts({"type": ["integer", "null"], "not": {"type": "null"}}, 3)
    assert not accepts({"type": ["integer", "null"], "not": {"type": "null"}}, None)
    with pytest.raises(UnsupportedSchemaError, match="'not'"):
        compile_schema_automaton({"type": "number", "not": {"type": "integer"}})


def test_not_of_values_double_negation_and_typed_required():
    ints = {"type": "integer", "not": {"enum": [0, 6379, -5, 10]}}
    for v in (1, 637, 63790, 6378, -50, -4, 100, 9):
        assert accepts(ints, v), v
    for v in (0, 6379, -5, 10, '"1"', 1.5):
        assert not accepts(ints, v), v
    mixed = {"not": {"enum": [True, None, "ab"]}}
    for v in (False, '"a"', '"abc"', '""', '"é"', '"a\\"b"', [1], {"x": 1}, 2.5):
        assert accepts(mixed, v), v
    for v in (True, None, '"ab"'):
        assert not accepts(mixed, v), v
    assert not accepts(mixed, '"\\u0061b"')  # another escape form of a banned string: still banned
    assert accepts({"type": "boolean", "not": {"const": False}}, True)
    assert not accepts({"type": "boolean", "not": {"const": False}}, False)
    enum = {"enum": [1, 2, 3], "not": {"const": 2}}
    assert accepts(enum, 1) and accepts(enum, 3) and not accepts(enum, 2)
    double = {"not": {"not": {"type": "string"}}}
    assert accepts(double, '"x"') and not accepts(double, 1)
    typed = {"not": {"type": "object", "required": ["a"]}}
    assert accepts(typed, {"b": 1}) and accepts(typed, 1) and accepts(typed, '"x"') and not accepts(typed, {"a": 1})


def test_if_then_else_on_a_property_condition():
    schema = {"type": "object", "properties": {"kind": {"type": "string"}, "n": {}},
              "if": {"properties": {"kind": {"const": "num"}}, "required": ["kind"]},
              "then": {"properties": {"n": {"type": "integer"}}}, "else": {"properties": {"n": {"type": "string"}}}}
    for v in ({"kind": "num", "n": 1}, {"kind": "str", "n": "x"}, {"kind": "nu", "n": "x"}, {"n": "x"}, {}):
        assert accepts(schema, v), v
    for v in ({"kind": "num", "n": "x"}, {"kind": "str", "n": 1}, {"kind": "numb", "n": 2}, {"n": 1}):
        assert not accepts(schema, v), v
    by_type = {"if": {"type": "string"}, "then": {"maxLength": 2}, "else": {"type": "integer"}}
    assert accepts(by_type, '"ab"') and accepts(by_type, 3)
    assert not accepts(by_type, '"abc"') and not accepts(by_type, 1.5) and not accepts(by_type, None)
    assert accepts({"if": False, "then": {"type": "string"}, "else": {"type": "integer"}}, 1)
    assert not accepts({"if": False, "then": {"type": "string"}, "else": {"type": "integer"}}, '"s"')
    with pytest.raises(UnsupportedSchemaError, match="'if'"):
        compile_schema_automaton({"if": {"minLength": 2}, "then": {"maxLength": 3}})


def test_nested_id_and_anchor_resolve_in_their_resource():
    schema = {"$id": "http://x/root.json", "type": "object",
              "properties": {"a": {"$ref": "item.json"}, "b": {"$ref": "#/$defs/local"}, "c": {"$ref": "item.json#num"}},
              "$defs": {"local": {"type": "string"},
                        "item": {"$id": "item.json", "type": "array", "items": {"$ref": "#/$defs/n"},
                                 "$defs": {"n": {"$anchor": "num", "type": "integer"}}}}}
    assert accepts(schema, {"a": [1, 2], "b": "s", "c": 3})
    assert not accepts(schema, {"a": ["x"]}) and not accepts(schema, {"b": 1}) and not accepts(schema, {"c": "x"})
    with pytest.raises(GrammarError):  # "#/$defs/b" inside http://x/a is that resource's $defs: absent
        compile_schema_automaton({"$defs": {"a": {"$id": "http://x/a", "items": {"$ref": "#/$defs/b"}},
                                            "b": {"type": "integer"}}, "$ref": "#/$defs/a"})


def test_unique_items_over_finite_item_sets_and_disjoint_tuples():
    enum = {"type": "array", "items": {"enum": ["a", "b", 1, 1.0, True]}, "uniqueItems": True}
    for v in ([], ["a"], ["a", "b"], ["b", "a", 1, True]):
        assert accepts(enum, v), v
    for v in (["a", "a"], [1, True, 1], ["a", "b", "a"], [True, True], ["c"]):
        assert not accepts(enum, v), v
    bounded = {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "minItems": 1, "maxItems": 2}
    assert accepts(bounded, [True]) and accepts(bounded, [False, True])
    assert not accepts(bounded, []) and not accepts(bounded, [False, False])
    tup = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False,
           "uniqueItems": True}
    assert accepts(tup, ["a", 1]) and not accepts(tup, ["a", 1, 2])
    assert accepts({"type": "array", "maxItems": 1, "uniqueItems": True}, [[1]])
    with pytest.raises(UnsupportedSchemaError, match="'uniqueItems'"):
        compile_schema_automaton({"type": "array", "items": {"enum": list(range(7))}, "uniqueItems": True})
    with pytest.raises(UnsupportedSchemaError, match="'uniqueItems'"):  # no type: arrays are among the values
        compile_schema_automaton({"uniqueItems": True})
    with pytest.raises(UnsupportedSchemaError, match="'uniqueItems'"):
        compile_schema_automaton({"type": "array", "prefixItems": [{}, {}], "items": False, "uniqueItems": True})


def test_min_properties_one():
    open_obj = {"type": "object", "properties": {"a": {"type": "integer"}}, "minProperties": 1}
    assert accepts(open_obj, {"a": 1}) and accepts(open_obj, {"b": 2}) and accepts(open_obj, {"a": 1, "b": 2})
    assert not accepts(open_obj, {}) and not accepts(open_obj, {"a": "x"})
    closed = {"type": "object", "properties": {"a": {}, "b": {}}, "additionalProperties": False, "minProperties": 1}
    assert accepts(closed, {"b": 1}) and not accepts(closed, {}) and not accepts(closed, {"c": 1})
    with pytest.raises(GrammarError):
        compile_schema_automaton({"type": "object", "additionalProperties": False, "minProperties": 1})


def test_object_keywords():
    pat = {"type": "object", "properties": {"ab": {"type": "integer"}},
           "patternProperties": {"^a": {"minimum": 0}}, "additionalProperties": {"type": "integer"}}
    assert accepts(pat, {"ab": 1, "ax": 2}) and not accepts(pat, {"ab": -1}) and not accepts(pat, {"ax": -2})
    names = {"type": "object", "properties": {"ok": {}, "not_ok!": {}}, "propertyNames": {"pattern": "^[a-z]+$"}}
    assert accepts(names, {"ok": 1}) and not accepts(names, {"not_ok!": 1}) and not accepts(names, {"zz": 1})
    dep = {"type": "object", "properties": {"card": {"type": "string"}, "billing": {"type": "string"}},
           "dependentRequired": {"card": ["billing"]}}
    assert accepts(dep, {"billing": "b"}) and not accepts(dep, {"card": "c"})
    assert not accepts(dep, {"card": "c", "billing": "b"})  # sound restriction: an optional trigger is left out
    dep_req = dict(dep, required=["card"])
    assert accepts(dep_req, {"card": "c", "billing": "b"}) and not accepts(dep_req, {"card": "c"})
    legacy = {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"], "dependencies": {"a": ["b"]}}
    assert accepts(legacy, {"a": 1, "b": 2}) and not accepts(legacy, {"a": 1})
    most = {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"], "maxProperties": 1}
    assert accepts(most, {"a": 1}) and not accepts(most, {"a": 1, "b": 2}) and not accepts(most, {"a": 1, "c": 2})
    least = {"type": "object", "properties": {"a": {}}, "required": ["a"], "minProperties": 1}
    assert accepts(least, {"a": 1})
    with pytest.raises(UnsupportedSchemaError, match="'minProperties'"):
        compile_schema_automaton({"type": "object", "minProperties": 2})


# ---------------------------------------------------------------- the bugs of issue 20, one test each
@pytest.mark.parametrize("schema", [
    {"const": "\ud800"}, {"type": "string", "pattern": "^[\ud800-\udbff]$"},
    {"type": "object", "properties": {"\ud800": {}}},
    {"type": "object", "properties": []}, {"type": "string", "pattern": 5}, {"enum": "abc"}, {"required": "a"},
    {"anyOf": {}}, {"type": 3}, {"minLength": -1}, {"items": 3},
    {"$id": "http://[::1", "properties": {"a": {"$ref": "#/x"}}}, {"if": 5}, {"if": {"type": "string"}, "then": 5},
    {"not": {"enum": "ab"}}, {"not": 5},
])
def test_bug4_malformed_schemas_raise_grammar_error_only(schema):
    with pytest.raises(GrammarError):
        compile_schema_automaton(schema)


def test_bug5_at_least_one_of_idiom_and_required_outside_properties():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}
    assert accepts(schema, {"a": 1}) and accepts(schema, {"b": 2}) and accepts(schema, {"a": 1, "b": 2})
    assert not accepts(schema, {}) and not accepts(schema, {"a": "x"})
    outside = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["c"]}
    assert accepts(outside, {"c": [1]}) and accepts(outside, {"a": 1, "c": None}) and not accepts(outside, {"a": 1})


def test_bug6_all_of_over_recursive_ref_compiles():
    schema = {"definitions": {"ChildFoo": {"type": "object"}, "Foo": {"properties": {"childFoos": {"allOf": [
        {"$ref": "#/definitions/Foo"}, {"$ref": "#/definitions/ChildFoo"}]}}, "required": ["childFoos"],
        "type": "object"}}, "properties": {"Foo": {"$ref": "#/definitions/Foo"}}, "required": ["Foo"]}
    try:  # every instance is infinitely deep (childFoos is required all the way down): no value, or refused
        a = compile_schema_automaton(schema)
        assert not accepts(schema, {"Foo": {"childFoos": {}}}) and a.num_states > 0
    except GrammarError:
        pass
    finite = json.loads(json.dumps(schema).replace('"required": ["childFoos"], ', ""))
    assert accepts(finite, {"Foo": {"childFoos": {"childFoos": {}}}})
    assert not accepts(finite, {"Foo": {"childFoos": {"childFoos": 1}}})


def test_bug2_integer_bounds_are_exact_beyond_2_53():
    schema = {"type": "integer", "minimum": 9007199254740993}
    assert not accepts(schema, "9007199254740992") and accepts(schema, "9007199254740993")
    assert not accepts({"type": "integer", "maximum": -9007199254740993}, "-9007199254740992")
    assert not accepts({"type": "integer", "exclusiveMaximum": 9007199254740993}, "9007199254740993")


def test_bug3_int64_ranges_compile_small():
    a = compile_schema_automaton({"type": "integer", "minimum": 0, "maximum": 9223372036854775807})
    assert a.num_states < 400
    schema = {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807}
    for n in [0, 7, -9223372036854775808, 9223372036854775807, 1234567890123456789, -10**18]:
        assert accepts(schema, str(n)), n
    for n in [9223372036854775808, -9223372036854775809, 10**19, 99999999999999999999]:
        assert not accepts(schema, str(n)), n
    big = {"type": "integer", "minimum": 0, "maximum": 10**15}
    assert accepts(big, str(10**15)) and not accepts(big, str(10**15 + 1)) and accepts(big, "999999999999999")


BIG = {"type": "object", "properties": {f"field_{i}": {"type": ["string", "integer"]} for i in range(12)},
       "required": ["field_0"], "additionalProperties": False}


def test_bug7_large_definition_used_many_times_is_compiled_once():
    schema = {"definitions": {"big": BIG}, "type": "object",
              "properties": {f"use_{i}": {"$ref": "#/definitions/big"} for i in range(8)}}
    shared = compile_schema_automaton(schema)
    inlined = compile_schema_automaton({"type": "object", "properties": {f"use_{i}": BIG for i in range(8)}})
    assert shared.num_states * 3 < inlined.num_states
    for value, ok in [({"use_0": {"field_0": "x"}, "use_7": {"field_0": 1, "field_11": "y"}}, True),
                      ({"use_3": {"field_1": "x"}}, False), ({"use_3": {"field_0": None}}, False),
                      ({"use_2": {"field_0": "a", "zzz": 1}}, False), ({"use_1": {"field_0": 1}, "other": [1]}, True)]:
        assert accepts(schema, value) == ok, value


def test_shared_definition_falls_back_to_inlining_where_a_call_cannot_be_placed():
    # the reference and another object alternative start with the same byte: a call cannot sit there
    schema = {"definitions": {"big": BIG}, "type": "object", "properties": {
        "a": {"anyOf": [{"$ref": "#/definitions/big"}, {"type": "object", "properties": {"k": {"const": 1}},
                                                         "required": ["k"], "additionalProperties": False}]},
        "b": {"$ref": "#/definitions/big"}}}
    assert accepts(schema, {"a": {"k": 1}, "b": {"field_0": 2}}) and accepts(schema, {"a": {"field_0": "s"}})
    assert not accepts(schema, {"a": {"k": 2}}) and not accepts(schema, {"b": {"k": 1}})


@pytest.mark.parametrize("schema", [
    {"type": "number", "minimum": 0, "maximum": 100}, {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    {"type": "number", "minimum": 2, "exclusiveMaximum": 5}, {"type": "number", "maximum": 3},
    {"type": "number", "exclusiveMaximum": 0}, {"type": "number", "exclusiveMinimum": 7},
    {"type": "number", "minimum": 5, "maximum": 5},
])
def test_decimal_bounds_exact(schema):
    from fractions import Fraction

    lo, hi = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum", schema.get("exclusiveMaximum"))
    texts = ["0", "-0", "0.0", "-0.5", "-3", "0.5", "1", "1.0", "1.000", "1.5", "2", "4.99", "5", "5.0", "5.01", "6.5",
             "7", "7.0", "7.01", "100", "100.0", "100.5", "99.999", "-0.0", "3", "3.0001", "2.9"]
    for text in texts:
        x = Fraction(text)
        ok = (lo is None or (x > lo if "exclusiveMinimum" in schema else x >= lo)) and (
            hi is None or (x < hi if "exclusiveMaximum" in schema else x <= hi))
        if ok and not accepts(schema, text):
            continue  # a valid number we do not write that way is a restriction, never a soundness bug
        assert accepts(schema, text) == ok, (schema, text)


def test_decimal_bounds_accept_the_usual_forms():
    schema = {"type": "number", "minimum": 0, "maximum": 100}
    for text in ["0", "50", "50.25", "100", "99.9"]:
        assert accepts(schema, text), text
    with pytest.raises(UnsupportedSchemaError, match="'maximum'"):
        compile_schema_automaton({"type": "number", "maximum": 1.5})
    with pytest.raises(UnsupportedSchemaError, match="'minimum'"):
        compile_schema_automaton({"type": "number", "minimum": -1})


def test_not_of_required_combinations():
    schema = {"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "required": ["a"],
              "not": {"required": ["a", "b"]}}
    assert accepts(schema, {"a": 1}) and accepts(schema, {"a": 1, "c": 2})
    assert not accepts(schema, {"a": 1, "b": 2}) and not accepts(schema, "x")
    both = {"type": "object", "properties": {"x": {}, "y": {}}, "required": ["x", "y"], "not": {"required": ["x", "y"]}}
    with pytest.raises(GrammarError, match="accepts no JSON value"):
        compile_schema_automaton(both)
    alts = {"type": "object", "properties": {"d": {}, "x": {}, "y": {}},
            "not": {"anyOf": [{"required": ["d", "x"]}, {"required": ["d", "y"]}]}}
    assert accepts(alts, {"d": 1}) or accepts(alts, {"x": 1, "y": 1})
    for bad in ({"d": 1, "x": 1}, {"d": 1, "y": 2}, {"d": 1, "x": 1, "y": 1}):
        assert not accepts(alts, bad), bad
    assert not accepts({"not": {"required": ["a"]}}, 5)  # a non-object satisfies `required`, so fails its `not`


def test_all_of_prefix_items_do_not_shield_positions_from_outer_items():
    # JSON-Schema-Test-Suite items.json #6: the outer `items` applies to every item, the inner prefix too
    schema = {"allOf": [{"prefixItems": [{"minimum": 3}]}], "items": {"minimum": 5}}
    assert not accepts(schema, [3, 5]) and accepts(schema, [5, 5])
    legacy = {"allOf": [{"items": [{"type": "integer"}], "additionalItems": {"type": "string"}}],
              "items": {"minimum": 2}}
    assert accepts(legacy, [3, "x"]) and not accepts(legacy, [1]) and not accepts(legacy, [3, 4])
